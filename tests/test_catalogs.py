"""Tests for physml.catalogs: the catalog types, the .npz format, CAMELS files, validation."""

import hashlib
import io
import json
import os
import re

import h5py
import numpy as np
import pytest

from physml.catalogs import (
    Catalog,
    CatalogSet,
    checksum_file,
    load_catalogs,
    read_camels_params,
    save_catalogs,
)

# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _rng_catalog(rng, n, vel=False):
    pos = rng.random((n, 3), dtype=np.float32)
    mass = (10 ** rng.uniform(-1, 3, n)).astype(np.float32)
    v = rng.normal(0, 300, (n, 3)).astype(np.float32) if vel else None
    return Catalog(pos, mass, v)


def _example_set():
    rng = np.random.default_rng(0)
    cats = [_rng_catalog(rng, 7, vel=True), _rng_catalog(rng, 0), _rng_catalog(rng, 12)]
    params = np.array([[0.3, 0.8], [0.1, 0.6], [0.5, 1.0]])
    meta = {"generator": "pm", "seeds": [1, 2, 3], "version": "0.1.0", "nested": {"a": 1.5}}
    return CatalogSet(cats, params, box_size=25.0, meta=meta)


def _good_npz_arrays():
    return {
        "sim_0": np.array([[0.1, 0.2, 0.3, 1.0], [0.9, 0.5, 0.0, 2.5]], np.float32),
        "sim_1": np.array([[0.4, 0.4, 0.4, 7.0]], np.float32),
        "params": np.array([[0.3, 0.8], [0.2, 0.7]]),
    }


def _write_npz(path, **arrays):
    np.savez(path, **arrays)
    return path


def _write_groups(
    path,
    pos,
    mass,
    vel=None,
    box=25000.0,
    time=1.0,
    redshift=0.0,
    header=True,
    ngroups=None,
):
    with h5py.File(path, "w") as f:
        if header:
            h = f.create_group("Header")
            if box is not None:
                h.attrs["BoxSize"] = box
            if time is not None:
                h.attrs["Time"] = time
            if redshift is not None:
                h.attrs["Redshift"] = redshift
            h.attrs["Ngroups_Total"] = len(mass) if ngroups is None else ngroups
        g = f.create_group("Group")
        if pos is not None:
            g.create_dataset("GroupPos", data=pos)
        if mass is not None:
            g.create_dataset("GroupMass", data=mass)
        if vel is not None:
            g.create_dataset("GroupVel", data=vel)
    return path


PARAMS_TXT = """#Name Omega_m sigma_8 A_SN1 A_AGN1 A_SN2 A_AGN2 seed
LH_0 0.30950 0.97850 3.11120 1.12730 0.66660 1.39740 10832

LH_1 0.12410 0.61790 0.47260 2.04370 1.23040 0.93470 21011
LH_2 0.47730 0.73030 1.00000 0.50110 1.88870 0.71310 4411
"""


def _m(path, key=""):
    """A regex matching a message that names the file ``path`` and then ``key``."""
    pat = re.escape(os.path.basename(os.fspath(path)))
    if key:
        pat += ".*" + re.escape(key)
    return pat


# --------------------------------------------------------------------------------------------
# types
# --------------------------------------------------------------------------------------------


def test_catalog_as_array_and_checks():
    cat = Catalog(np.array([[0.1, 0.2, 1.0]]), np.array([3.0]))
    assert cat.pos.dtype == np.float32 and cat.mass.dtype == np.float32
    assert cat.pos[0, 2] == 0.0  # exactly 1.0 wraps to 0.0
    arr = cat.as_array()
    assert arr.dtype == np.float32 and arr.shape == (1, 4)
    np.testing.assert_array_equal(arr, np.float32([[0.1, 0.2, 0.0, 3.0]]))
    empty = Catalog(np.zeros((0, 3)), np.zeros(0))
    assert len(empty) == 0 and empty.as_array().shape == (0, 4)
    with pytest.raises(ValueError, match=r"Catalog.pos.*\[N, 3\]"):
        Catalog(np.zeros((2, 2)), np.ones(2))
    with pytest.raises(ValueError, match=r"masses must be > 0"):
        Catalog(np.zeros((1, 3)), np.array([0.0]))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        Catalog(np.array([[0.5, 1.2, 0.5]]), np.array([1.0]))
    with pytest.raises(ValueError, match=r"Catalog.vel"):
        Catalog(np.zeros((2, 3)), np.ones(2), np.zeros((3, 3)))


def test_catalog_set_indexing_and_views():
    cs = _example_set()
    assert len(cs) == 3
    np.testing.assert_array_equal(cs.n_halos, [7, 0, 12])
    assert cs.n_halos.dtype.kind == "i"
    assert isinstance(cs[0], Catalog) and cs[-1] is cs.catalogs[2]
    np.testing.assert_array_equal(cs.sigma_8, [0.8, 0.6, 1.0])
    np.testing.assert_array_equal(cs.omega_m, [0.3, 0.1, 0.5])
    assert np.shares_memory(cs.sigma_8, cs.params) and np.shares_memory(cs.omega_m, cs.params)

    sub = cs[1:]
    assert isinstance(sub, CatalogSet) and len(sub) == 2 and sub.meta == cs.meta
    np.testing.assert_array_equal(sub.sigma_8, [0.6, 1.0])
    sub = cs[np.array([2, 0])]
    assert sub.catalogs[0] is cs.catalogs[2]
    np.testing.assert_array_equal(sub.params, [[0.5, 1.0], [0.3, 0.8]])
    sub = cs[np.array([True, False, True])]
    np.testing.assert_array_equal(sub.n_halos, [7, 12])
    sub.meta["x"] = 1  # the subset's meta is a copy
    assert len(cs[[]]) == 0 and cs[[]].params.shape == (0, 2)
    assert "n=3" in repr(cs) and "n_halos=0..12" in repr(cs)
    assert repr(cs[0]) == "Catalog(n_halos=7, vel=True)"
    with pytest.raises(IndexError):
        cs[np.array([True, False])]
    assert "x" not in cs.meta
    with pytest.raises(ValueError, match=r"CatalogSet.params"):
        CatalogSet(cs.catalogs, np.zeros((2, 2)))


def test_with_mass_cut_hand_count():
    pos = np.full((5, 3), 0.5, np.float32)
    mass = np.array([0.5, 1.0, 2.0, 10.0, 0.99], np.float32)  # 1e10 Msun/h
    vel = np.arange(15, dtype=np.float32).reshape(5, 3)
    cs = CatalogSet(
        [Catalog(pos, mass, vel), Catalog(pos[:1], mass[:1])],
        np.array([[0.3, 0.8], [np.nan, 0.9]]),
        meta={"k": 1},
    )
    cut = cs.with_mass_cut(1e10)  # keeps masses >= 1.0 (boundary included)
    np.testing.assert_array_equal(cut.n_halos, [3, 0])
    np.testing.assert_array_equal(cut[0].mass, np.float32([1.0, 2.0, 10.0]))
    np.testing.assert_array_equal(cut[0].vel, vel[[1, 2, 3]])
    assert cut.meta == {"k": 1}
    np.testing.assert_array_equal(cut.params, cs.params)
    np.testing.assert_array_equal(cs.with_mass_cut(5e10).n_halos, [1, 0])
    np.testing.assert_array_equal(cs.with_mass_cut(1e12).n_halos, [0, 0])  # zero halos legal
    np.testing.assert_array_equal(cs.with_mass_cut(0.0).n_halos, [5, 1])


# --------------------------------------------------------------------------------------------
# .npz round trip and label forms
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [True, False])
def test_round_trip_bitwise(tmp_path, compress):
    cs = _example_set()
    path = tmp_path / "halos.npz"
    save_catalogs(path, cs, compress=compress)
    assert os.listdir(tmp_path) == ["halos.npz"]  # no temp file left behind
    back = load_catalogs(path)
    assert back.source == os.fspath(path)
    assert len(back) == len(cs) and back.box_size == 25.0
    assert back.meta == cs.meta
    assert back.params.dtype == np.float64
    assert back.params.tobytes() == cs.params.tobytes()
    for a, b in zip(cs.catalogs, back.catalogs, strict=True):
        assert b.pos.dtype == np.float32 and b.mass.dtype == np.float32
        assert a.pos.tobytes() == b.pos.tobytes() and a.mass.tobytes() == b.mass.tobytes()
        if a.vel is None:
            assert b.vel is None
        else:
            assert b.vel.dtype == np.float32 and a.vel.tobytes() == b.vel.tobytes()
    with np.load(path, allow_pickle=False) as z:  # the on-disk format itself
        assert sorted(z.files) == ["box_size", "meta", "params", "sim_0", "sim_1", "sim_2", "vel_0"]
        assert z["sim_2"].dtype == np.float32 and z["sim_2"].shape == (12, 4)
        assert z["sim_1"].shape == (0, 4)
        assert z["meta"].ndim == 0 and z["meta"].dtype.kind == "U"
        assert json.loads(str(z["meta"])) == cs.meta
        assert z["box_size"].dtype == np.float64 and z["box_size"].shape == ()


def test_save_overwrites_atomically_and_refuses_bad_meta(tmp_path):
    path = tmp_path / "halos.npz"
    cs = _example_set()
    save_catalogs(path, cs[:1])
    save_catalogs(path, cs)
    assert len(load_catalogs(path)) == 3
    bad = CatalogSet(cs.catalogs, cs.params, meta={"f": object()})
    with pytest.raises(ValueError, match=_m("bad.npz", "'meta'")):
        save_catalogs(tmp_path / "bad.npz", bad)
    assert sorted(os.listdir(tmp_path)) == ["halos.npz"]


def test_unlabelled_set_saves_without_params(tmp_path):
    cs = _example_set()
    unl = CatalogSet(cs.catalogs, np.full((3, 2), np.nan))
    path = tmp_path / "unl.npz"
    save_catalogs(path, unl)
    with np.load(path) as z:
        assert "params" not in z.files
    with pytest.raises(ValueError, match=_m(path, "'params'")):
        load_catalogs(path)
    np.save(tmp_path / "si8.npy", np.array([0.7, 0.8, 0.9]))
    np.testing.assert_array_equal(
        load_catalogs(path, tmp_path / "si8.npy").sigma_8, [0.7, 0.8, 0.9]
    )


def test_si8_values_npy_labels(tmp_path):
    arrays = _good_npz_arrays()
    del arrays["params"]
    path = _write_npz(tmp_path / "halos.npz", **arrays)
    np.save(tmp_path / "si8_values.npy", np.array([0.75, 0.85], np.float32))
    cs = load_catalogs(path, labels=tmp_path / "si8_values.npy")
    assert cs.params.shape == (2, 2) and cs.params.dtype == np.float64
    assert np.isnan(cs.omega_m).all()
    np.testing.assert_array_equal(cs.sigma_8, np.float32([0.75, 0.85]).astype(np.float64))
    assert cs.box_size == 25.0 and cs.meta == {}
    np.testing.assert_array_equal(cs[0].as_array(), arrays["sim_0"])


def test_pair_npy_labels_override_file_params(tmp_path):
    path = _write_npz(tmp_path / "halos.npz", **_good_npz_arrays())
    np.save(tmp_path / "p.npy", np.array([[0.25, 0.65], [0.45, 0.95]]))
    np.testing.assert_array_equal(load_catalogs(path).params, [[0.3, 0.8], [0.2, 0.7]])
    cs = load_catalogs(path, labels=str(tmp_path / "p.npy"))
    np.testing.assert_array_equal(cs.params, [[0.25, 0.65], [0.45, 0.95]])


def test_camels_table_as_labels_for_npz(tmp_path):
    arrays = _good_npz_arrays()
    arrays["sim_2"] = np.zeros((0, 4), np.float32)  # zero halos is legal
    del arrays["params"]
    path = _write_npz(tmp_path / "halos.npz", **arrays)
    table = tmp_path / "CosmoAstroSeed_IllustrisTNG_L25n256_LH.txt"
    table.write_text(PARAMS_TXT)
    cs = load_catalogs(path, labels=table)
    np.testing.assert_array_equal(cs.omega_m, [0.3095, 0.1241, 0.4773])
    np.testing.assert_array_equal(cs.n_halos, [2, 1, 0])


def test_position_exactly_one_wraps_to_zero(tmp_path):
    arrays = _good_npz_arrays()
    arrays["sim_1"] = np.array([[1.0, 0.0, 0.5, 1.0]], np.float32)
    cs = load_catalogs(_write_npz(tmp_path / "h.npz", **arrays))
    np.testing.assert_array_equal(cs[1].pos, np.float32([[0.0, 0.0, 0.5]]))


def test_box_size_and_optional_keys(tmp_path):
    arrays = _good_npz_arrays()
    arrays["box_size"] = np.array(50.0)
    arrays["vel_1"] = np.array([[1.0, 2.0, 3.0]], np.float32)
    cs = load_catalogs(_write_npz(tmp_path / "h.npz", **arrays))
    assert cs.box_size == 50.0 and cs[0].vel is None
    np.testing.assert_array_equal(cs[1].vel, [[1.0, 2.0, 3.0]])


# --------------------------------------------------------------------------------------------
# .npz refusals: every message names the file and the key
# --------------------------------------------------------------------------------------------


def _mutate(**changes):
    def make():
        arrays = _good_npz_arrays()
        for k, v in changes.items():
            if v is None:
                arrays.pop(k)
            else:
                arrays[k] = v
        return arrays

    return make


BAD_NPZ = {
    "gap": (_mutate(sim_1=None, sim_2=np.array([[0.1, 0.1, 0.1, 1.0]], np.float32)), "'sim_1'"),
    "no sims": (_mutate(sim_0=None, sim_1=None, params=np.zeros((0, 2))), "'sim_0'"),
    "bad sim name": (_mutate(sim_01=np.zeros((0, 4), np.float32)), "'sim_01'"),
    "shape": (_mutate(sim_1=np.zeros((10, 3), np.float32)), "'sim_1'"),
    "shape text": (
        _mutate(sim_1=np.zeros((10, 3), np.float32)),
        "got float32 array of shape (10, 3)",
    ),
    "ndim": (_mutate(sim_0=np.ones(4, np.float32)), "'sim_0'"),
    "int-like str": (_mutate(sim_0=np.array([["a", "b", "c", "d"]])), "'sim_0'"),
    "nan pos": (_mutate(sim_0=np.array([[np.nan, 0.1, 0.1, 1.0]], np.float32)), "'sim_0'"),
    "inf mass": (_mutate(sim_1=np.array([[0.1, 0.1, 0.1, np.inf]], np.float32)), "'sim_1'"),
    "zero mass": (_mutate(sim_1=np.array([[0.1, 0.1, 0.1, 0.0]], np.float32)), "'sim_1'"),
    "neg mass": (_mutate(sim_0=np.array([[0.1, 0.1, 0.1, -2.0]], np.float32)), "'sim_0'"),
    "pos > 1": (_mutate(sim_0=np.array([[0.1, 1.5, 0.1, 1.0]], np.float32)), "'sim_0'"),
    "pos < 0": (_mutate(sim_1=np.array([[-1e-3, 0.5, 0.1, 1.0]], np.float32)), "'sim_1'"),
    "params shape": (_mutate(params=np.array([0.8, 0.7])), "'params'"),
    "params count": (_mutate(params=np.array([[0.3, 0.8]] * 3)), "'params'"),
    "params nan s8": (_mutate(params=np.array([[0.3, np.nan], [0.3, 0.8]])), "'params'"),
    "params neg s8": (_mutate(params=np.array([[0.3, -0.8], [0.3, 0.8]])), "'params'"),
    "params neg om": (_mutate(params=np.array([[-0.3, 0.8], [0.3, 0.8]])), "'params'"),
    "params str": (_mutate(params=np.array([["a", "b"], ["c", "d"]])), "'params'"),
    "vel shape": (_mutate(vel_0=np.zeros((2, 2), np.float32)), "'vel_0'"),
    "vel length": (_mutate(vel_0=np.zeros((3, 3), np.float32)), "'vel_0'"),
    "vel nan": (_mutate(vel_1=np.array([[np.nan, 0, 0]], np.float32)), "'vel_1'"),
    "vel orphan": (_mutate(vel_5=np.zeros((1, 3), np.float32)), "'vel_5'"),
    "box_size": (_mutate(box_size=np.array(-25.0)), "'box_size'"),
    "box_size vec": (_mutate(box_size=np.array([25.0, 25.0])), "'box_size'"),
    "meta json": (_mutate(meta=np.array("{not json")), "'meta'"),
    "meta list": (_mutate(meta=np.array("[1, 2]")), "'meta'"),
    "meta bytes": (_mutate(meta=np.array(b"{}")), "'meta'"),
    "object sim": (_mutate(sim_1=np.array([None, 1], dtype=object)), "'sim_1'"),
    "object params": (_mutate(params=np.array([{"a": 1}, 2], dtype=object)), "'params'"),
}


@pytest.mark.parametrize("case", sorted(BAD_NPZ))
def test_bad_npz_refused(tmp_path, case):
    make, key = BAD_NPZ[case]
    path = _write_npz(tmp_path / "halos.npz", **make())
    with pytest.raises(ValueError, match=_m(path, key)):
        load_catalogs(path)


def test_object_array_gives_clear_message(tmp_path):
    path = _write_npz(tmp_path / "halos.npz", **_mutate(sim_0=np.array([1, "a"], object))())
    with pytest.raises(ValueError, match=_m(path, "'sim_0'") + ".*pickle"):
        load_catalogs(path)


def test_labels_refusals(tmp_path):
    arrays = _good_npz_arrays()
    del arrays["params"]
    path = _write_npz(tmp_path / "halos.npz", **arrays)
    with pytest.raises(ValueError, match=_m(path, "'params'")):  # neither params nor labels
        load_catalogs(path)
    np.save(tmp_path / "si8_values.npy", np.array([0.7, 0.8, 0.9]))
    with pytest.raises(ValueError, match=_m(path) + ".*2 catalog.*si8_values.npy.*3 row"):
        load_catalogs(path, tmp_path / "si8_values.npy")
    np.save(tmp_path / "nan.npy", np.array([0.7, np.nan]))
    with pytest.raises(ValueError, match=_m("nan.npy", "sigma_8")):
        load_catalogs(path, tmp_path / "nan.npy")
    np.save(tmp_path / "three.npy", np.ones((2, 3)))
    with pytest.raises(ValueError, match=_m("three.npy") + r".*\(2, 3\)"):
        load_catalogs(path, tmp_path / "three.npy")
    np.save(tmp_path / "obj.npy", np.array([0.7, None], dtype=object))
    with pytest.raises(ValueError, match=_m("obj.npy") + ".*pickle"):
        load_catalogs(path, tmp_path / "obj.npy")
    with pytest.raises(FileNotFoundError, match=_m("missing.npy")):
        load_catalogs(path, tmp_path / "missing.npy")


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=_m("nope.npz")):
        load_catalogs(tmp_path / "nope.npz")
    text = tmp_path / "halos.npz"
    text.write_text("this is not a zip file\n")
    with pytest.raises(ValueError, match=_m(text) + ".*not a valid"):
        load_catalogs(text)
    path = _write_npz(tmp_path / "trunc.npz", **_good_npz_arrays())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=_m(path)):
        load_catalogs(path)
    npy = tmp_path / "arr.npy"
    np.save(npy, np.ones(3))
    with pytest.raises(ValueError, match=_m(npy) + ".*not a valid"):
        load_catalogs(npy)
    with pytest.raises(ValueError, match=_m(tmp_path) + ".*no CAMELS group files"):
        load_catalogs(tmp_path)


# --------------------------------------------------------------------------------------------
# CAMELS parameter table
# --------------------------------------------------------------------------------------------


def test_read_camels_params(tmp_path):
    path = tmp_path / "CosmoAstroSeed_IllustrisTNG_L25n256_LH.txt"
    path.write_text(PARAMS_TXT)
    p = read_camels_params(path)
    assert p.dtype == np.float64
    np.testing.assert_array_equal(p, [[0.3095, 0.9785], [0.1241, 0.6179], [0.4773, 0.7303]])
    # header with reordered columns and a space after '#'
    path.write_text("# Name sigma_8 Omega_m seed\nLH_0 0.9 0.2 1\nLH_1 0.7 0.4 2\n")
    np.testing.assert_array_equal(read_camels_params(path), [[0.2, 0.9], [0.4, 0.7]])
    # no header: name column detected, or plain numbers
    path.write_text("LH_0 0.3 0.8 1.0\nLH_1 0.2 0.9 1.0\n")
    np.testing.assert_array_equal(read_camels_params(path), [[0.3, 0.8], [0.2, 0.9]])
    path.write_text("0.3 0.8 1.0\n0.2 0.9 1.0\n")
    np.testing.assert_array_equal(read_camels_params(path), [[0.3, 0.8], [0.2, 0.9]])


@pytest.mark.parametrize(
    "text, expected",
    [
        ("#Name Omega_m sigma_8\nLH_0 0.3 abc\n", "line 2: column 'sigma_8'"),
        ("#Name Omega_m sigma_8\nLH_0 0.3 0.8\nLH_1 0.3\n", "line 3: expected 3 columns"),
        ("#Name Omega_m sigma_8\nLH_0 0.3 -0.8\n", "line 2: column 'sigma_8'"),
        ("#Name Omega_m sigma_8\nLH_0 nan 0.8\n", "line 2: column 'Omega_m'"),
        ("#Name Omega_m sigma_8\nLH_0 0.3 inf\n", "line 2: column 'sigma_8'"),
        ("#Name Omega_m foo\nLH_0 0.3 0.8\n", "'sigma_8'"),
        ("# only a comment\n\n", "no data rows"),
    ],
)
def test_read_camels_params_refusals(tmp_path, text, expected):
    path = tmp_path / "CosmoAstroSeed_bad.txt"
    path.write_text(text)
    with pytest.raises(ValueError, match=_m(path, expected)):
        read_camels_params(path)


def test_read_camels_params_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match=_m("CosmoAstroSeed_x.txt")):
        read_camels_params(tmp_path / "CosmoAstroSeed_x.txt")


# --------------------------------------------------------------------------------------------
# CAMELS HDF5 group files
# --------------------------------------------------------------------------------------------


def test_hdf5_units_and_wrapping(tmp_path):
    pos = np.array(
        [
            [12500.0, 6250.0, 25000.0],  # z exactly at BoxSize -> 0
            [1000.0, 24000.0, 5000.0],
            [-1000.0, 0.0, 18750.0],  # just outside: wraps to 0.96
        ],
        np.float32,
    )
    mass = np.array([1.5, 20.0, 0.3], np.float32)
    vel = np.array([[100.0, -50.0, 0.0], [1.0, 2.0, 3.0], [0.0, 0.0, 0.0]], np.float32)
    path = _write_groups(tmp_path / "groups_090.hdf5", pos, mass, vel, time=0.5, redshift=1.0)
    cs = load_catalogs(path)
    assert len(cs) == 1 and cs.box_size == 25.0 and cs.source == os.fspath(path)
    expected = np.array(
        [[0.5, 0.25, 0.0], [0.04, 0.96, 0.2], [0.96, 0.0, 0.75]], np.float64
    ).astype(np.float32)
    np.testing.assert_array_equal(cs[0].pos, expected)
    assert cs[0].pos.dtype == np.float32 and (cs[0].pos < 1).all() and (cs[0].pos >= 0).all()
    np.testing.assert_array_equal(cs[0].mass, mass)
    # GroupVel is km/s/a; a = 0.5 -> peculiar velocity doubles
    np.testing.assert_array_equal(cs[0].vel, 2 * vel)
    assert np.isnan(cs.params).all()  # no labels: params unknown
    assert cs.meta["files"] == ["groups_090.hdf5"] and cs.meta["redshift"] == [1.0]


def test_hdf5_float32_rounding_to_one_is_wrapped(tmp_path):
    pos = np.array([[25000.0 * (1 - 1e-9), 0.0, 0.0]], np.float64)  # float32 -> 25000.0
    path = _write_groups(tmp_path / "groups_000.hdf5", pos, np.array([1.0]))
    cs = load_catalogs(path)
    assert cs[0].pos[0, 0] == 0.0


def test_hdf5_box_size_other_than_25(tmp_path):
    path = _write_groups(
        tmp_path / "groups_000.hdf5", np.array([[50000.0, 0, 0]]), np.array([2.0]), box=205000.0
    )
    cs = load_catalogs(path)
    assert cs.box_size == 205.0
    np.testing.assert_array_equal(cs[0].pos, np.float32([[50000.0 / 205000.0, 0, 0]]))


def test_hdf5_directory_list_and_labels(tmp_path):
    d = tmp_path / "sims"
    d.mkdir()
    one = np.array([[100.0, 200.0, 300.0]])
    _write_groups(d / "groups_010.hdf5", one, np.array([3.0]))
    _write_groups(d / "groups_002.hdf5", np.vstack([one, one]), np.array([1.0, 2.0]))
    _write_groups(d / "fof_subhalo_tab_033.hdf5", np.zeros((0, 3)), np.zeros(0))
    (d / "notes.txt").write_text("ignored")
    table = tmp_path / "CosmoAstroSeed_test.txt"
    table.write_text(PARAMS_TXT)

    cs = load_catalogs(d, labels=table)
    # sorted by name: fof_subhalo_tab_033, groups_002, groups_010
    np.testing.assert_array_equal(cs.n_halos, [0, 2, 1])
    assert cs.meta["files"] == ["fof_subhalo_tab_033.hdf5", "groups_002.hdf5", "groups_010.hdf5"]
    np.testing.assert_array_equal(cs.sigma_8, [0.9785, 0.6179, 0.7303])
    assert cs[0].vel is None

    # a list keeps the order given
    cs = load_catalogs([d / "groups_010.hdf5", d / "groups_002.hdf5"], labels=[0.8, 0.7])
    np.testing.assert_array_equal(cs.n_halos, [1, 2])
    np.testing.assert_array_equal(cs.sigma_8, [0.8, 0.7])
    np.testing.assert_array_equal(cs[0].pos, np.float32([[0.004, 0.008, 0.012]]))

    table.write_text(PARAMS_TXT + "LH_3 0.3 0.8 1 1 1 1 5\n")
    with pytest.raises(ValueError, match=_m("sims") + ".*3 catalog.*CosmoAstroSeed_test.*4 row"):
        load_catalogs(d, labels=table)


def test_hdf5_round_trip_through_npz(tmp_path):
    pos = np.array([[12500.0, 6250.0, 25000.0]], np.float32)
    path = _write_groups(tmp_path / "groups_090.hdf5", pos, np.array([4.0]), np.ones((1, 3)))
    cs = load_catalogs(path, labels=[0.81])
    save_catalogs(tmp_path / "out.npz", cs)
    back = load_catalogs(tmp_path / "out.npz")
    assert back[0].pos.tobytes() == cs[0].pos.tobytes()
    assert back.meta == cs.meta and back[0].vel is not None


def test_hdf5_empty_file_without_group_datasets(tmp_path):
    path = _write_groups(tmp_path / "groups_000.hdf5", None, None, ngroups=0)
    cs = load_catalogs(path)
    np.testing.assert_array_equal(cs.n_halos, [0])


BAD_H5 = {
    "no pos": (dict(pos=None), "'Group/GroupPos'"),
    "no mass": (dict(mass=None), "'Group/GroupMass'"),
    "no header": (dict(header=False), "'Header'"),
    "no boxsize": (dict(box=None), "'Header/BoxSize'"),
    "neg boxsize": (dict(box=-1.0), "'Header/BoxSize'"),
    "pos shape": (dict(pos=np.zeros((2, 2))), "'Group/GroupPos'"),
    "mass shape": (dict(mass=np.ones((2, 1))), "'Group/GroupMass'"),
    "mass length": (dict(mass=np.ones(3)), "'Group/GroupMass'"),
    "mass zero": (dict(mass=np.array([1.0, 0.0])), "'Group/GroupMass'"),
    "pos nan": (dict(pos=np.array([[0.0, np.nan, 0.0], [1.0, 1.0, 1.0]])), "'Group/GroupPos'"),
    "vel shape": (dict(vel=np.zeros((2, 2))), "'Group/GroupVel'"),
    "vel length": (dict(vel=np.zeros((1, 3))), "'Group/GroupVel'"),
    "vel inf": (dict(vel=np.array([[0, 0, np.inf], [0, 0, 0]])), "'Group/GroupVel'"),
    "pos str": (dict(pos=np.array([b"a", b"b"])), "'Group/GroupPos'"),
}


@pytest.mark.parametrize("case", sorted(BAD_H5))
def test_bad_hdf5_refused(tmp_path, case):
    kwargs = dict(pos=np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]), mass=np.array([1.0, 2.0]))
    changes, key = BAD_H5[case]
    kwargs.update(changes)
    if kwargs["mass"] is None:
        kwargs["ngroups"] = 2
    path = _write_groups(tmp_path / "groups_033.hdf5", **kwargs)
    with pytest.raises(ValueError, match=_m(path, key)):
        load_catalogs(path)


def test_hdf5_mismatched_box_sizes_and_bad_files(tmp_path):
    a = _write_groups(tmp_path / "groups_000.hdf5", np.zeros((1, 3)), np.ones(1))
    b = _write_groups(tmp_path / "groups_001.hdf5", np.zeros((1, 3)), np.ones(1), box=50000.0)
    with pytest.raises(ValueError, match=_m(b, "'Header/BoxSize'")):
        load_catalogs([a, b])
    with pytest.raises(FileNotFoundError, match=_m("groups_999.hdf5")):
        load_catalogs([a, tmp_path / "groups_999.hdf5"])
    fake = tmp_path / "groups_002.hdf5"
    fake.write_bytes(b"\x89HDF\r\n\x1a\n" + b"garbage" * 10)
    with pytest.raises(ValueError, match=_m(fake) + ".*not a valid HDF5"):
        load_catalogs(fake)
    with pytest.raises(ValueError, match=_m(a) + ".*1 catalog.*2 row"):
        load_catalogs(a, labels=[0.8, 0.9])


# --------------------------------------------------------------------------------------------
# checksum
# --------------------------------------------------------------------------------------------


def test_checksum_file(tmp_path):
    path = tmp_path / "blob.bin"
    data = os.urandom(3000)
    path.write_bytes(data)
    expected = hashlib.sha256(data).hexdigest()
    assert checksum_file(path) == expected
    assert checksum_file(path, chunk_size=7) == expected
    with pytest.raises(FileNotFoundError, match=_m("absent.bin")):
        checksum_file(tmp_path / "absent.bin")


# --------------------------------------------------------------------------- hostile sizes


def test_npz_with_a_huge_catalog_index_is_refused_without_allocating(tmp_path):
    """sim_0 and sim_999999999: once a MemoryError (range(10**9)); now the gap is named."""
    path = _write_npz(
        tmp_path / "gap.npz",
        sim_0=np.zeros((1, 4), np.float32) + 0.5,
        sim_999999999=np.zeros((1, 4), np.float32) + 0.5,
        params=np.array([[0.3, 0.8]]),
    )
    assert path.stat().st_size < 2000
    with pytest.raises(ValueError, match=_m(path, "sim_1") + ".*999999998 missing"):
        load_catalogs(path)


def test_npz_entry_declaring_more_than_it_holds_is_refused(tmp_path):
    """A .npy header declaring 10**9 rows in a few bytes: refused from the header."""
    import zipfile

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f4", "fortran_order": False, "shape": (10**9, 4)}
    )
    path = tmp_path / "bomb.npz"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("sim_0.npy", header.getvalue() + b"\0" * 64)
        buf = io.BytesIO()
        np.save(buf, np.array([[0.3, 0.8]]))
        zf.writestr("params.npy", buf.getvalue())
    with pytest.raises(ValueError, match=_m(path, "sim_0") + ".*corrupt entry"):
        load_catalogs(path)


def test_npz_catalog_over_the_halo_limit_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "big.npz"
    save_catalogs(path, _example_set())
    monkeypatch.setenv("PHYSML_MAX_HALOS", "3")
    with pytest.raises(ValueError, match="PHYSML_MAX_HALOS="):
        load_catalogs(path)
    monkeypatch.setenv("PHYSML_MAX_HALOS", "1000")
    assert len(load_catalogs(path)) == len(_example_set())


def test_npz_stream_that_does_not_inflate_is_a_clear_error(tmp_path):
    path = tmp_path / "z.npz"
    save_catalogs(path, _example_set())
    data = bytearray(path.read_bytes())
    start = data.index(b"sim_0.npy") + len("sim_0.npy") + 40  # inside the deflate stream
    data[start : start + 40] = b"\xff" * 40
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=_m(path)):
        load_catalogs(path)


def test_same_set_same_bytes(tmp_path):
    """Entries carry a fixed time stamp: equal sets give equal files (and checksums)."""
    import time

    save_catalogs(tmp_path / "a.npz", _example_set())
    time.sleep(2.1)  # zip time stamps have a 2 s resolution
    save_catalogs(tmp_path / "b.npz", _example_set())
    assert checksum_file(tmp_path / "a.npz") == checksum_file(tmp_path / "b.npz")


def test_hdf5_declaring_a_huge_dataset_is_refused_before_reading(tmp_path):
    path = tmp_path / "groups_000.hdf5"
    with h5py.File(path, "w") as f:
        h = f.create_group("Header")
        h.attrs["BoxSize"], h.attrs["Time"], h.attrs["Redshift"] = 25000.0, 1.0, 0.0
        g = f.create_group("Group")
        g.create_dataset("GroupPos", shape=(500_000_000, 3), dtype="f4", chunks=(1024, 3))
        g.create_dataset("GroupMass", shape=(500_000_000,), dtype="f4", chunks=(1024,))
    assert path.stat().st_size < 100_000  # declares 6 GB
    with pytest.raises(ValueError, match=_m(path, "Group/GroupPos") + ".*PHYSML_MAX_HALOS"):
        load_catalogs(path)


# --------------------------------------------------------------------------- HDF5 units, time


def test_hdf5_positions_in_other_units_than_box_size_are_refused(tmp_path):
    rng = np.random.default_rng(0)
    pos_kpc = rng.uniform(0, 25000, (30, 3)).astype(np.float32)
    mass = np.full(30, 50.0, np.float32)
    mpc_box = _write_groups(tmp_path / "groups_000.hdf5", pos_kpc, mass, box=25.0)
    with pytest.raises(ValueError, match=_m(mpc_box, "Group/GroupPos") + ".*kpc/h"):
        load_catalogs(mpc_box)
    mpc_pos = _write_groups(tmp_path / "groups_001.hdf5", pos_kpc / 1000, mass, box=25000.0)
    with pytest.raises(ValueError, match=_m(mpc_pos, "Group/GroupPos") + ".*Mpc/h"):
        load_catalogs(mpc_pos)


@pytest.mark.parametrize(
    "time, redshift, key",
    [
        (-1.0, None, "Header/Time"),
        (0.0, None, "Header/Time"),
        (None, -1.0, "Header/Redshift"),
        (0.5, 0.0, "Header/Time"),
    ],
)
def test_hdf5_time_and_redshift_out_of_range_are_refused(tmp_path, time, redshift, key):
    pos = np.full((2, 3), 100.0, np.float32)
    vel = np.ones((2, 3), np.float32)
    path = _write_groups(
        tmp_path / "groups_000.hdf5",
        pos,
        np.ones(2, np.float32) * 50,
        vel,
        time=time,
        redshift=redshift,
    )
    with pytest.raises(ValueError, match=_m(path, key)):
        load_catalogs(path)


def test_camels_table_header_in_another_order_and_spelling(tmp_path):
    """A 'Sigma8 OmegaM0' header once fell back to positional columns, swapping them."""
    path = tmp_path / "params.txt"
    path.write_text("#Sigma8 OmegaM0\n0.8 0.3\n0.9 0.2\n")
    np.testing.assert_array_equal(read_camels_params(path), [[0.3, 0.8], [0.2, 0.9]])
    path.write_text("#Sigma8 Hubble\n0.8 0.7\n")
    with pytest.raises(ValueError, match=_m(path) + ".*Omega_m"):
        read_camels_params(path)


# --------------------------------------------------------------------------------------------
# issue 23: labels against the prior box, corrupt .npy headers, HDF5 external links
# --------------------------------------------------------------------------------------------


def _in_box_params(n, seed=0):
    rng = np.random.default_rng(seed)
    return np.stack([rng.uniform(0.1, 0.5, n), rng.uniform(0.6, 1.0, n)], 1)


def test_labels_outside_the_prior_box_warn_and_say_which_column_looks_like_what(tmp_path):
    import warnings

    rng = np.random.default_rng(3)
    cats = [_rng_catalog(rng, 5) for _ in range(12)]
    params = _in_box_params(12)
    path = tmp_path / "set.npz"
    save_catalogs(path, CatalogSet(cats, params))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # labels in the box: not a word
        load_catalogs(path)
    swapped = tmp_path / "swapped.npy"
    np.save(swapped, params[:, ::-1])
    with pytest.warns(UserWarning, match="swapped") as record:
        load_catalogs(path, labels=swapped)
    text = str(record[0].message)
    assert "swapped.npy" in text and "column 0 (Omega_m)" in text
    assert "column 1 (sigma_8)" in text and "prior of Omega_m" in text
    # the file's own params swapped: named by its key
    save_catalogs(tmp_path / "own.npz", CatalogSet(cats, params[:, ::-1].copy()))
    with pytest.warns(UserWarning, match="own.npz: key 'params'.*swapped"):
        load_catalogs(tmp_path / "own.npz")
    # sigma_8 alone with Omega_m's values
    s8 = tmp_path / "s8.npy"
    np.save(s8, params[:, 0])
    with pytest.warns(UserWarning, match="the sigma_8 labels.*prior of Omega_m"):
        load_catalogs(path, labels=s8)
    # one column out of its box, not like the other parameter: said, without "swapped"
    big = tmp_path / "big.npy"
    np.save(big, params * [1.0, 1.5])
    with pytest.warns(UserWarning, match=r"column 1 \(sigma_8\) has \d+ of 12") as record:
        load_catalogs(path, labels=big)
    assert "swapped" not in str(record[0].message)


def test_corrupt_npy_header_inside_an_npz_is_one_clear_error(tmp_path):
    import zipfile

    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.full((5, 4), 0.5, np.float32))
    data = bytearray(buf.getvalue())
    data[data.index(b"}")] = ord("(")  # an unclosed bracket: tokenize.TokenError in numpy
    path = tmp_path / "corrupt.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("sim_0.npy", bytes(data))
    with pytest.raises(ValueError, match=_m(path, "sim_0") + ".*corrupt entry.*header"):
        load_catalogs(path, labels=np.array([0.8]))
    # the same damage in a labels .npy
    labels = tmp_path / "labels.npy"
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.array([0.8]))
    data = bytearray(buf.getvalue())
    data[data.index(b"}")] = ord("(")
    labels.write_bytes(bytes(data))
    good = _write_npz(tmp_path / "good.npz", sim_0=np.full((3, 4), 0.5, np.float32))
    with pytest.raises(ValueError, match=_m(labels) + ".*cannot read labels"):
        load_catalogs(good, labels=labels)


def test_hdf5_external_links_are_refused_not_followed(tmp_path):
    rng = np.random.default_rng(0)
    other = tmp_path / "elsewhere.hdf5"
    with h5py.File(other, "w") as f:
        f["pos"] = rng.random((30, 3)) * 25000
        f.create_group("Group")["GroupPos"] = rng.random((30, 3)) * 25000
        f["Group/GroupMass"] = np.full(30, 10.0)
    one = _write_groups(tmp_path / "groups_000.hdf5", None, np.full(30, 10.0))
    with h5py.File(one, "a") as f:
        f["Group/GroupPos"] = h5py.ExternalLink(str(other), "/pos")
    with pytest.raises(ValueError, match=_m(one, "Group/GroupPos") + ".*external link"):
        load_catalogs(one)
    whole = tmp_path / "groups_001.hdf5"
    with h5py.File(whole, "w") as f:
        f.create_group("Header").attrs.update({"BoxSize": 25000.0, "Time": 1.0})
        f["Group"] = h5py.ExternalLink(str(other), "/Group")
    with pytest.raises(ValueError, match=_m(whole, "Group") + ".*external link"):
        load_catalogs(whole)
    # a soft link inside the file is fine
    soft = _write_groups(
        tmp_path / "groups_002.hdf5", rng.random((30, 3)) * 25000, None, ngroups=30
    )
    with h5py.File(soft, "a") as f:
        f["masses"] = np.full(30, 10.0)
        f["Group/GroupMass"] = h5py.SoftLink("/masses")
    assert load_catalogs(soft)[0].n_halos == 30
