"""minilm.ray.Embedder with Ray Data: a local 2-CPU Ray cluster embeds a dataset column."""

from __future__ import annotations

import time

import numpy as np
import pytest

from minilm.ray import Embedder


def test_embedder_without_ray(ml_real, real_model_path, sentences):
    """The class on its own, as map_batches calls it: numpy and pandas batches."""
    texts = sentences[:20]
    emb = Embedder(str(real_model_path), device="cpu", embedding_column="vec")
    out = emb({"text": np.array(texts, dtype=object), "id": np.arange(20)})
    np.testing.assert_array_equal(out["vec"], ml_real.encode(texts))
    np.testing.assert_array_equal(out["id"], np.arange(20))
    assert emb({"text": np.array([], dtype=object)})["vec"].shape == (0, 384)
    with pytest.raises(KeyError, match="no column 'text'"):
        emb({"body": np.array(["a"])})
    with pytest.raises(TypeError, match="row 1 of this batch is int"):
        emb({"text": np.array(["a", 3], dtype=object)})
    pd = pytest.importorskip("pandas")
    df = emb(pd.DataFrame({"text": texts}))
    np.testing.assert_array_equal(np.stack(df["vec"].to_list()), ml_real.encode(texts))


def test_ray_data_map_batches_matches_encode(ml_real, real_model_path, sentences):
    ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'minilm[ray]'")
    texts = sentences[:2000]
    ref = ml_real.encode(texts)
    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    try:
        ds = ray.data.from_items([{"id": i, "text": t} for i, t in enumerate(texts)])
        ds = ds.map_batches(
            Embedder,
            fn_constructor_kwargs={"model_name_or_path": str(real_model_path), "device": "cpu",
                                   "local_files_only": True},
            concurrency=2,
            num_cpus=1,
            batch_size=250,
            batch_format="numpy",
        )
        rows = ds.take_all()
    finally:
        ray.shutdown()
    elapsed = time.perf_counter() - t0
    print(f"\nray map_batches over {len(texts)} texts: {elapsed:.1f} s")
    assert len(rows) == len(texts)
    rows.sort(key=lambda r: r["id"])  # Ray Data does not promise the input order
    assert [r["text"] for r in rows] == texts
    emb = np.stack([r["embedding"] for r in rows])
    assert emb.shape == (len(texts), 384)
    # Each actor runs the same batch-invariant CPU path, on 1 thread instead of the test's 2.
    np.testing.assert_allclose(emb, ref, rtol=0, atol=1e-6)
