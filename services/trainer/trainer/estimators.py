"""Three scikit-learn estimators for the one-hot linear model: fast to build, exact to fit.

`MissingIdFiller` takes location IDs as the TLC's files hold them (float64 with NaN when not
reported, or integers) and gives integers, missing as -1: it is the model's first step, so
that the logged model takes the files' own columns, whoever loads it.
`IntegerOneHotEncoder` one-hot encodes integer columns straight into a CSR matrix from
integer codes (scikit-learn's `OneHotEncoder` takes 5x longer on a million location IDs).
`ExactLinearRegression` solves least squares directly instead of iteratively: the default
`LinearRegression` runs LSQR on sparse input, whose answer moves with the CPU's
floating-point paths and stops at a tolerance of 1e-6.
"""

import numpy as np
import scipy.linalg
import scipy.sparse as sp
from sklearn.base import BaseEstimator, RegressorMixin, TransformerMixin
from sklearn.utils import Tags
from sklearn.utils.validation import check_is_fitted, validate_data

# A location ID that was not reported: its own category, as in the seed's pipeline.
MISSING_ID = -1
# Integer types the encoder takes without a copy (validate_data converts others to the first).
INTEGERS = [np.int64, np.int32]
# Rows of the design per block of the Gram matrix: X.T @ X at once would hold a transposed
# copy of X (24 bytes a trip); blocks of this many rows hold about 0.1 GiB.
GRAM_BLOCK_ROWS = 1 << 21


def fill_missing_ids(ids: np.ndarray, fill_value: int = MISSING_ID) -> np.ndarray:
    """Location IDs as integers, missing ones as `fill_value`: NaN, and any value no int64
    holds (infinite, or beyond its range), which a plain cast would silently wrap (1e20 to
    INT64_MIN, the largest uint64 to -1). A fraction is truncated, as the encoder's own int64
    conversion always did: the TLC's IDs are whole numbers.

    int32 when every value fits (the TLC's 1-265 always do), else int64: half the memory of a
    20 M-trip month, and the same values."""
    if ids.dtype.kind == "i":
        return _compact(ids)
    if ids.dtype.kind == "u":
        out = ids.astype(np.int64)
        out[ids > np.iinfo(np.int64).max] = fill_value
        return _compact(out)
    held = ids >= -(2.0**63)
    np.logical_and(held, ids < 2.0**63, out=held)  # False for NaN and infinities
    # No float temporary of the whole input: the range of the held values, then a cast of
    # them alone into an array of the fill value.
    low = ids.min(where=held, initial=fill_value)
    high = ids.max(where=held, initial=fill_value)
    out = np.full(ids.shape, fill_value, dtype=_integers_for(low, high))
    np.copyto(out, ids, casting="unsafe", where=held)  # truncates, as astype does
    return out


def _compact(ids: np.ndarray) -> np.ndarray:
    low, high = (ids.min(), ids.max()) if ids.size else (0, 0)
    return ids.astype(_integers_for(low, high), copy=False)


def _integers_for(low: float, high: float) -> type[np.signedinteger]:
    """int32 if every value from `low` to `high` (truncated) fits, else int64."""
    small = np.iinfo(np.int32)
    return np.int32 if small.min <= low and high < small.max + 1 else np.int64


class MissingIdFiller(TransformerMixin, BaseEstimator):
    """Location IDs, float (NaN: not reported) or integer, as integers (int32 when they fit,
    else int64) with missing as `fill_value`. Stateless: `fit` only records the columns."""

    def __init__(self, fill_value: int = MISSING_ID) -> None:
        self.fill_value = fill_value

    def __sklearn_tags__(self) -> Tags:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        if tags.transformer_tags is not None:
            tags.transformer_tags.preserves_dtype = []  # gives integers, whatever it is given
        return tags

    def fit(self, X, y=None) -> "MissingIdFiller":
        validate_data(self, X, dtype="numeric", ensure_all_finite=False, reset=True)
        return self

    def transform(self, X) -> np.ndarray:
        check_is_fitted(self)
        # Infinities are let through: they are as missing as NaN (fill_missing_ids).
        X = validate_data(self, X, dtype="numeric", ensure_all_finite=False, reset=False)
        return fill_missing_ids(X, self.fill_value)


class IntegerOneHotEncoder(TransformerMixin, BaseEstimator):
    """One column per distinct value of each integer input column, in a CSR matrix.

    Values unseen in `fit` encode as all zeros, as `DictVectorizer.transform` and
    `OneHotEncoder(handle_unknown="ignore")` do. int32 input is taken as it is (not copied to
    int64); the categories are int64 either way.
    """

    def fit(self, X, y=None) -> "IntegerOneHotEncoder":
        X = validate_data(self, X, dtype=INTEGERS, reset=True)
        self.categories_ = [np.unique(column).astype(np.int64) for column in X.T]
        return self

    def transform(self, X) -> sp.csr_matrix:
        check_is_fitted(self)
        X = validate_data(self, X, dtype=INTEGERS, reset=False)
        rows, columns = X.shape
        indices = np.empty((rows, columns), dtype=np.int32)
        known = np.empty((rows, columns), dtype=bool)
        offset = 0
        for j, categories in enumerate(self.categories_):
            values = X[:, j]
            if values.dtype != categories.dtype and (
                _integers_for(categories[0], categories[-1]) == values.dtype
            ):
                categories = categories.astype(values.dtype)  # not the column to int64
            # In place: a 20 M-trip month is 160 MB a temporary.
            position = np.searchsorted(categories, values)
            np.minimum(position, len(categories) - 1, out=position)
            np.equal(categories[position], values, out=known[:, j])
            position += offset
            indices[:, j] = position
            offset += len(categories)
            del position
        # int32 row pointers while they fit (scipy would convert int64 ones to int32 anyway).
        entries = rows * columns
        index_type = np.int32 if entries <= np.iinfo(np.int32).max else np.int64
        # Every row has one entry per column; an unseen value keeps a stored zero, dropped below.
        matrix = sp.csr_matrix(
            (
                known.ravel().astype(np.float64),
                indices.ravel(),
                np.arange(0, entries + 1, columns, dtype=index_type),
            ),
            shape=(rows, offset),
        )
        if not known.all():
            matrix.eliminate_zeros()
        return matrix


class ExactLinearRegression(RegressorMixin, BaseEstimator):
    """Ordinary least squares with an intercept, solved directly through the Gram matrix.

    The solution is the one `LinearRegression` converges to: the minimum-norm coefficients
    of the centred problem, with the intercept from the means. That choice matters for a
    one-hot design, which is rank-deficient (each block of columns sums to the intercept):
    predictions on training rows are the same for every least-squares solution, but a row
    with an unseen category depends on how the constant is split, and minimum norm is the
    split the reference pipeline makes.

    The Gram matrix is dense, features x features, so this is for designs of up to a few
    thousand columns, however many rows. The solve drops the directions whose singular values
    are rounding noise (below features x machine epsilon, relative), as `pinvh` would; on a
    one-hot design of a million rows they sit 1e13 below the smallest real one.
    """

    def __sklearn_tags__(self) -> Tags:
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags

    def fit(self, X, y) -> "ExactLinearRegression":
        X, y = validate_data(self, X, y, accept_sparse="csr", y_numeric=True, reset=True)
        y = np.asarray(y, dtype=np.float64)
        rows = X.shape[0]
        column_sums = np.asarray(X.sum(axis=0)).ravel()
        x_mean, y_mean = column_sums / rows, float(y.mean())
        gram = _gram(X)
        centred_gram = gram - np.outer(column_sums, x_mean)
        centred_xty = np.asarray(X.T @ (y - y_mean)).ravel()
        noise = centred_gram.shape[0] * np.finfo(np.float64).eps
        self.coef_, _, self.rank_, _ = scipy.linalg.lstsq(centred_gram, centred_xty, cond=noise)
        self.intercept_ = y_mean - float(x_mean @ self.coef_)
        return self

    def predict(self, X) -> np.ndarray:
        check_is_fitted(self)
        X = validate_data(self, X, accept_sparse="csr", reset=False)
        return np.asarray(X @ self.coef_).ravel() + self.intercept_


def _gram(X) -> np.ndarray:
    """X.T @ X, dense, summed over blocks of rows. Exact whatever the blocks for a one-hot
    design: its entries are counts, whole numbers that float64 adds without rounding."""
    if not sp.issparse(X):
        return X.T @ X
    gram = np.zeros((X.shape[1], X.shape[1]))
    for start in range(0, X.shape[0], GRAM_BLOCK_ROWS):
        block = X[start : start + GRAM_BLOCK_ROWS]
        gram += (block.T @ block).toarray()
    return gram
