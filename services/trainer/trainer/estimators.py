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


def fill_missing_ids(ids: np.ndarray, fill_value: int = MISSING_ID) -> np.ndarray:
    """Location IDs as int64, missing ones as `fill_value`: NaN, and any value no int64
    holds (infinite, or beyond its range), which a plain cast would silently wrap (1e20 to
    INT64_MIN, the largest uint64 to -1). A fraction is truncated, as the encoder's own int64
    conversion always did: the TLC's IDs are whole numbers."""
    if ids.dtype.kind == "i":
        return ids.astype(np.int64, copy=False)
    if ids.dtype.kind == "u":
        out = ids.astype(np.int64)
        out[ids > np.iinfo(np.int64).max] = fill_value
        return out
    held = (ids >= -(2.0**63)) & (ids < 2.0**63)  # False for NaN and infinities
    return np.where(held, ids, fill_value).astype(np.int64)


class MissingIdFiller(TransformerMixin, BaseEstimator):
    """Location IDs, float (NaN: not reported) or integer, as int64 with missing as
    `fill_value`. Stateless: `fit` only records the columns."""

    def __init__(self, fill_value: int = MISSING_ID) -> None:
        self.fill_value = fill_value

    def __sklearn_tags__(self) -> Tags:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        if tags.transformer_tags is not None:
            tags.transformer_tags.preserves_dtype = []  # gives int64, whatever it is given
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
    `OneHotEncoder(handle_unknown="ignore")` do.
    """

    def fit(self, X, y=None) -> "IntegerOneHotEncoder":
        X = validate_data(self, X, dtype=np.int64, reset=True)
        self.categories_ = [np.unique(column) for column in X.T]
        return self

    def transform(self, X) -> sp.csr_matrix:
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.int64, reset=False)
        rows, columns = X.shape
        indices = np.empty((rows, columns), dtype=np.int32)
        known = np.empty((rows, columns), dtype=bool)
        offset = 0
        for j, categories in enumerate(self.categories_):
            position = np.searchsorted(categories, X[:, j]).clip(max=len(categories) - 1)
            known[:, j] = categories[position] == X[:, j]
            indices[:, j] = position + offset
            offset += len(categories)
        # Every row has one entry per column; an unseen value keeps a stored zero, dropped below.
        matrix = sp.csr_matrix(
            (
                known.ravel().astype(np.float64),
                indices.ravel(),
                np.arange(0, rows * columns + 1, columns),
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
        gram = X.T @ X
        gram = gram.toarray() if sp.issparse(gram) else np.asarray(gram)
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
