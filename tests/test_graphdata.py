"""Graph data for the GNN: fast mode, the fixed split, HaloDataset and its graph cache,
the mass cut, the cube-symmetry augmentation, and the checks at that boundary."""

import warnings

import numpy as np
import pytest
import torch

from physml.graphdata import fast_mode


def test_fast_mode_reads_the_environment(monkeypatch):
    monkeypatch.setenv("PHYSML_FAST", "1")
    assert fast_mode()
    monkeypatch.setenv("PHYSML_FAST", "0")
    assert not fast_mode()
    monkeypatch.delenv("PHYSML_FAST")
    assert not fast_mode()


# ----------------------------------------------------------------------------- graph data set
def _toy_set(rng, n=6, with_empty=True):
    from physml.catalogs import Catalog, CatalogSet

    cats = []
    for i in range(n):
        k = 0 if (with_empty and i == 0) else (1 if (with_empty and i == 1) else 40 + 10 * i)
        cats.append(
            Catalog(
                rng.random((k, 3)).astype(np.float32),
                (30 + 100 * rng.random(k)).astype(np.float32),
                rng.normal(0, 300, (k, 3)).astype(np.float32),
            )
        )
    params = np.stack([np.linspace(0.1, 0.5, n), np.linspace(0.6, 1.0, n)], 1)
    return CatalogSet(cats, params)


def test_split_is_fixed_disjoint_and_complete():
    from physml.graphdata import split_indices

    s = split_indices(1000, fast=False)
    assert [len(s[k]) for k in ("train", "val", "test")] == [700, 150, 150]
    allidx = np.concatenate(list(s.values()))
    assert len(np.unique(allidx)) == 1000
    assert not set(s["train"]) & set(s["test"]) and not set(s["val"]) & set(s["test"])
    assert all(np.array_equal(s[k], split_indices(1000, fast=False)[k]) for k in s)
    f = split_indices(1000, fast=True)
    assert all(set(f[k]) <= set(s[k]) for k in s)


def test_halo_dataset_graphs_features_and_cache(tmp_path):
    from scipy.spatial import cKDTree

    from physml.graphdata import HaloDataset, feature_norm

    cset = _toy_set(np.random.default_rng(0))
    ds = HaloDataset(cset, r_link=0.2, mass_cut=None, cache_dir=tmp_path)
    assert len(ds) == 6 and len(list(tmp_path.glob("graphs_*.npz"))) == 1
    for i, d in enumerate(ds):
        c = cset[i]
        assert d.y.tolist() == [[np.float32(cset.sigma_8[i]), np.float32(cset.omega_m[i])]]
        assert d.x.shape == (len(c), 1) and d.pos.shape == (len(c), 3)
        # every edge is a pair closer than r_link with the minimum image, and none is missing
        pairs = cKDTree(c.pos.astype(np.float64), boxsize=1.0).query_pairs(0.2) if len(c) else set()
        got = {tuple(sorted(e)) for e in d.edge_index.t().tolist()}
        assert got == {tuple(sorted(p)) for p in pairs}
        assert d.edge_index.shape[1] == 2 * len(got)
    norm = feature_norm(cset)
    logm = np.log10(cset[3].mass)
    assert np.allclose(
        ds[3].x[:, 0].numpy(), (logm - norm["log_mass_mean"]) / norm["log_mass_std"], atol=1e-5
    )
    # the second construction reads the cache; another r_link is another key
    (f,) = tmp_path.glob("graphs_*.npz")
    mtime = f.stat().st_mtime_ns
    HaloDataset(cset, r_link=0.2, mass_cut=None, cache_dir=tmp_path)
    assert f.stat().st_mtime_ns == mtime
    HaloDataset(cset, r_link=0.15, mass_cut=None, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("graphs_*.npz"))) == 2
    # a damaged cache is rebuilt, not trusted
    f.write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="rebuilt"):
        again = HaloDataset(cset, r_link=0.2, mass_cut=None, cache_dir=tmp_path)
    assert torch.equal(again[4].edge_index, ds[4].edge_index)
    with pytest.raises(ValueError, match="r_link"):
        HaloDataset(cset, r_link=0.7, cache_dir=False)


def test_mass_cut_applies_before_graphs():
    from physml.graphdata import HaloDataset

    cset = _toy_set(np.random.default_rng(1))
    ds = HaloDataset(cset, mass_cut=8e11, cache_dir=False)
    for i, d in enumerate(ds):
        assert d.num_nodes == int((cset[i].mass >= 80).sum())


def test_cube_symmetry_keeps_edge_lengths():
    from physml.graphdata import HaloDataset, RandomCubeSymmetry
    from physml.graphs import minimum_image

    ds = HaloDataset(_toy_set(np.random.default_rng(2)), mass_cut=None, cache_dir=False)
    t = RandomCubeSymmetry(seed=3)
    for d in ds:
        a = t(d)
        assert ((a.pos >= 0) & (a.pos < 1)).all()
        src, dst = d.edge_index
        before = minimum_image(d.pos[src] - d.pos[dst], 1.0).norm(dim=1)
        after = minimum_image(a.pos[src] - a.pos[dst], 1.0).norm(dim=1)
        assert torch.allclose(before, after, atol=1e-5)
        assert torch.allclose(a.vel.norm(dim=1), d.vel.norm(dim=1))


# ----------------------------------------------------------------------------- boundary checks
def test_cache_whose_content_does_not_match_its_key_is_rebuilt(tmp_path):
    from physml.graphdata import HaloDataset

    a = _toy_set(np.random.default_rng(0))
    b = _toy_set(np.random.default_rng(5))
    ref = HaloDataset(a, mass_cut=None, cache_dir=False)
    HaloDataset(a, mass_cut=None, cache_dir=tmp_path / "a")
    HaloDataset(b, mass_cut=None, cache_dir=tmp_path / "b")
    (fa,), (fb,) = (tmp_path / "a").glob("*.npz"), (tmp_path / "b").glob("*.npz")
    # b's graphs under a's key (same shapes: both sets have the same halo counts)
    fa.write_bytes(fb.read_bytes())
    with pytest.warns(UserWarning, match="another key"):
        got = HaloDataset(a, mass_cut=None, cache_dir=tmp_path / "a")
    assert all(torch.equal(g.edge_index, r.edge_index) for g, r in zip(got, ref, strict=True))
    # a's own file with one edge changed
    with np.load(fa) as f:
        arrays = dict(f)
    arrays["edge_index"][0, 0] = (arrays["edge_index"][0, 0] + 1) % 40
    np.savez(fa, **arrays)
    with pytest.warns(UserWarning, match="sha256"):
        got = HaloDataset(a, mass_cut=None, cache_dir=tmp_path / "a")
    assert all(torch.equal(g.edge_index, r.edge_index) for g, r in zip(got, ref, strict=True))


def test_unwritable_cache_directory_is_skipped(tmp_path):
    from physml.graphdata import HaloDataset

    blocker = tmp_path / "file"
    blocker.write_text("not a directory")  # works as root too, unlike chmod
    cset = _toy_set(np.random.default_rng(0))
    with pytest.warns(UserWarning, match="not cached"):
        ds = HaloDataset(cset, mass_cut=None, cache_dir=blocker / "cache")
    ref = HaloDataset(cset, mass_cut=None, cache_dir=False)
    assert all(torch.equal(g.edge_index, r.edge_index) for g, r in zip(ds, ref, strict=True))


def test_empty_or_partial_norm_is_refused():
    """An empty feature_norm was replaced by the evaluated data's own statistics."""
    from physml.graphdata import HaloDataset, check_feature_norm, feature_norm

    cset = _toy_set(np.random.default_rng(0))
    for bad in ({}, {"log_mass_mean": 1.0}, {**feature_norm(cset), "log_n_std": 0.0}):
        with pytest.raises(ValueError, match="norm"):
            HaloDataset(cset, norm=bad, mass_cut=None, cache_dir=False)
    assert check_feature_norm(feature_norm(cset)) == feature_norm(cset)


def test_graph_over_the_edge_limit_is_refused_before_building(monkeypatch):
    from physml.catalogs import Catalog, CatalogSet
    from physml.graphdata import HaloDataset

    rng = np.random.default_rng(0)
    big = Catalog(rng.random((1200, 3)).astype(np.float32), np.full(1200, 50, np.float32))
    cset = CatalogSet([big], np.array([[0.3, 0.8]]))
    # exact count by brute force: all ordered pairs closer than 0.1, minimum image
    d = big.pos[:, None, :].astype(np.float64) - big.pos[None, :, :]
    d -= np.round(d)
    n_edges = int(((d**2).sum(-1) <= 0.01).sum()) - 1200
    monkeypatch.setenv("PHYSML_MAX_EDGES", str(n_edges - 1))
    with pytest.raises(ValueError, match=f"{n_edges:,} edges per graph.*PHYSML_MAX_EDGES"):
        HaloDataset(cset, r_link=0.1, mass_cut=None, cache_dir=False)
    monkeypatch.setenv("PHYSML_MAX_EDGES", str(n_edges))
    assert HaloDataset(cset, r_link=0.1, mass_cut=None, cache_dir=False)[0].num_edges == n_edges


def test_mass_units_and_cuts_that_remove_everything_warn():
    from physml.catalogs import Catalog, CatalogSet
    from physml.graphdata import check_masses

    rng = np.random.default_rng(0)
    pos = rng.random((60, 3)).astype(np.float32)
    good = 10 ** rng.uniform(1.5, 4, 60)  # 3e10..1e14 Msun/h in units of 1e10 Msun/h

    def cset(mass):
        return CatalogSet([Catalog(pos, mass.astype(np.float32))], np.array([[0.3, 0.8]]))

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_masses(cset(good), 2e11, "good")
    with pytest.warns(UserWarning, match="Msun/h\\?"):
        check_masses(cset(good * 1e10), 2e11, "msun")
    with pytest.warns(UserWarning) as rec:
        check_masses(cset(np.log10(good * 1e10)), 2e11, "log")
    messages = " | ".join(str(w.message) for w in rec)
    assert "log10" in messages and "removes all" in messages


def test_large_catalogs_show_progress(capsys):
    from physml.catalogs import Catalog, CatalogSet
    from physml.graphdata import LARGE_CATALOG, HaloDataset

    rng = np.random.default_rng(1)
    n = LARGE_CATALOG + 1
    big = Catalog(rng.random((n, 3)).astype(np.float32), np.full(n, 50, np.float32))
    HaloDataset(
        CatalogSet([big], np.array([[0.3, 0.8]])), r_link=0.01, mass_cut=None, cache_dir=False
    )
    assert "radius graphs" in capsys.readouterr().err
    small = _toy_set(np.random.default_rng(0))
    HaloDataset(small, mass_cut=None, cache_dir=False)
    assert "radius graphs" not in capsys.readouterr().err  # lecture-sized sets stay quiet
