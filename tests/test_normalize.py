import numpy as np
import pytest

from ftcp import layout as L
from ftcp.normalize import RowMinMaxScaler


def _data(n=37, seed=0):
    rng = np.random.default_rng(seed)
    x = np.zeros((n, *L.SHAPE), np.float32)
    x[:, L.LATTICE_ROWS, L.XYZ_COLS] = rng.uniform(3, 12, (n, 2, 3))
    x[:, L.KDIST_ROW, L.RECIP_COLS] = rng.uniform(0.1, 1.3, (n, 59))
    x[:, L.PROPERTY_ROWS, L.RECIP_COLS] = rng.normal(0, 30, (n, 92, 59))
    return x


def test_fit_is_per_row_across_samples_and_columns_and_chunking_does_not_matter():
    x = _data()
    a = RowMinMaxScaler().fit(x)
    b = RowMinMaxScaler().fit(x, chunk_size=5)
    np.testing.assert_array_equal(a.row_min, b.row_min)
    np.testing.assert_array_equal(a.row_max, x.max(axis=(0, 2)))
    z = a.transform(x)
    assert z.min() >= 0 and z.max() <= 1 + 1e-6
    assert np.all(z[:, L.PAD_ROWS] == 0)                        # zero-range rows map to 0
    np.testing.assert_allclose(a.inverse_transform(z), x, atol=1e-4)


def test_fit_on_subset_and_band_transform(tmp_path):
    x = _data()
    rows = np.array([3, 1, 7, 20])
    s = RowMinMaxScaler().fit(x, rows=rows)
    np.testing.assert_array_equal(s.row_max, x[np.sort(rows)].max(axis=(0, 2)))
    band = L.block("reciprocal_space")
    np.testing.assert_array_equal(s.transform(band.take(x), rows=band.rows), band.take(s.transform(x)))
    path = s.save(tmp_path / "norm.json")
    t = RowMinMaxScaler.load(path)
    np.testing.assert_array_equal(t.row_min, s.row_min)
    np.testing.assert_array_equal(t.transform(x), s.transform(x))


def test_errors():
    with pytest.raises(RuntimeError, match="not fitted"):
        RowMinMaxScaler().transform(_data(2))
    with pytest.raises(ValueError, match="zero samples"):
        RowMinMaxScaler().fit(_data(2), rows=[])
