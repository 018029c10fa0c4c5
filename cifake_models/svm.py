"""The paper's first detector: HOG features of the grayscale image, scaled, into an RBF SVM.

The RBF kernel is approximated with Nystroem features and a linear SVM (:class:`PrimalSvm`);
``scripts/svm_kernel_check.py`` measures the approximation against exact ``SVC``.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter
from scipy.optimize import minimize
from skimage.feature import hog
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin
from sklearn.kernel_approximation import Nystroem
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from .images import SIZE, grayscale
from .recipes import SvmRecipe


class HogFeatures(TransformerMixin, BaseEstimator):
    """Flattened uint8 RGB 32x32 images to HOG descriptors (Dalal & Triggs 2005).

    One descriptor per cell size in ``pixels_per_cell``, concatenated (a coarse scale adds the
    layout of the whole image). ``colour=False`` describes the luma, as the paper does;
    ``colour=True`` takes at each pixel the gradient of the colour channel where it is
    strongest, as Dalal & Triggs did for colour images. ``smoothing`` adds copies of the image
    smoothed by a Gaussian of each of these sigmas (pixels), each described the same way: a
    scale space (Lindeberg 1994) whose coarse levels a later blur of the upload barely changes,
    beside the fine level that holds most of the evidence on CIFAKE's own pixels.
    """

    smoothing: tuple[float, ...] = ()  # also the value for checkpoints saved before the option existed

    def __init__(
        self,
        orientations: int = 9,
        pixels_per_cell: tuple[int, ...] = (8,),
        cells_per_block: int = 2,
        colour: bool = False,
        smoothing: tuple[float, ...] = (),
    ):
        self.orientations = orientations
        self.pixels_per_cell = pixels_per_cell
        self.cells_per_block = cells_per_block
        self.colour = colour
        self.smoothing = smoothing

    def fit(self, X, y=None):
        return self

    def transform(self, X) -> np.ndarray:
        return np.stack(
            [
                np.concatenate(
                    [self.describe(level, cell) for level in self.levels(image) for cell in self.pixels_per_cell]
                )
                for image in self.inputs(X)
            ]
        ).astype(np.float32)

    def levels(self, image: np.ndarray) -> list[np.ndarray]:
        """The image (as :meth:`inputs` gives it) and its smoothed copies, finest first."""
        spatial = lambda sigma: (sigma, sigma, 0) if self.colour else sigma  # noqa: E731 (never across colour channels)
        return [image, *(gaussian_filter(image, spatial(sigma)) for sigma in self.smoothing)]

    def inputs(self, X) -> np.ndarray:
        """Flattened (or ``[n, 32, 32, 3]``) uint8 images as HOG reads them: luma or RGB in [0, 1]."""
        images = np.asarray(X, dtype=np.uint8).reshape(-1, SIZE, SIZE, 3)
        return images.astype(np.float32) / 255.0 if self.colour else grayscale(images)

    def describe(self, image: np.ndarray, cell: int, visualize: bool = False):
        """One image's HOG descriptor at one cell size; with ``visualize``, also skimage's picture
        of it (what :mod:`cifake_models.explain` shows)."""
        block = (self.cells_per_block,) * 2
        return hog(
            image,
            self.orientations,
            (cell, cell),
            block,
            block_norm="L2-Hys",
            channel_axis=-1 if self.colour else None,
            visualize=visualize,
        )


class PrimalSvm(ClassifierMixin, BaseEstimator):
    """A linear SVM with LinearSVC's default objective, ``|w|^2 / 2 + C * sum(max(0, 1 - y f(x))^2)``,
    minimised in the primal by L-BFGS (the squared hinge makes it smooth: Keerthi & DeCoste 2005).

    liblinear copies dense input into 16 bytes per value; this works on float32 features in
    place, so 90,000 images x 10,000 Nystroem features (3.6 GB) fit in memory.
    """

    def __init__(self, C: float = 1.0, max_iter: int = 1000, tol: float = 1e-5):
        self.C = C
        self.max_iter = max_iter
        self.tol = tol

    def fit(self, X, y):
        X = np.asarray(X, dtype=np.float32)
        self.classes_ = np.unique(y)
        if len(self.classes_) != 2:
            raise ValueError(f"PrimalSvm needs two classes, got {self.classes_}")
        sign = np.where(y == self.classes_[1], 1.0, -1.0).astype(np.float32)

        def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
            w, b = theta[:-1].astype(np.float32), theta[-1]
            slack = np.maximum(0.0, 1.0 - sign * (X @ w + b))
            residual = (-2.0 * self.C * sign * slack).astype(np.float32)
            gradient = np.concatenate([w + X.T @ residual, [residual.sum(dtype=np.float64)]])
            return 0.5 * float(w @ w) + self.C * float(slack @ slack), gradient.astype(np.float64)

        result = minimize(
            objective,
            np.zeros(X.shape[1] + 1),
            jac=True,
            method="L-BFGS-B",
            options={"maxiter": self.max_iter, "gtol": self.tol},
        )
        self.coef_ = result.x[None, :-1]
        self.intercept_ = result.x[-1:]
        self.n_iter_ = result.nit
        return self

    def decision_function(self, X) -> np.ndarray:
        return np.asarray(X, dtype=np.float32) @ self.coef_[0] + self.intercept_[0]

    def predict(self, X) -> np.ndarray:
        return self.classes_[(self.decision_function(X) > 0).astype(int)]


class RbfFeatures(TransformerMixin, BaseEstimator):
    """``exp(-gamma * |x - landmark|^2)`` for each landmark: a fitted Nystroem map without its
    m x m normalisation, which :func:`fold_nystroem` moves into the linear SVM's weights."""

    def __init__(self, gamma: float = 1.0):
        self.gamma = gamma

    def fit(self, X, y=None):
        raise TypeError("RbfFeatures is made from a fitted Nystroem map by fold_nystroem, not fitted")

    def transform(self, X) -> np.ndarray:
        # |x - l|^2 = |x|^2 + |l|^2 - 2 x.l, all in float64. In float32 the cancellation left
        # errors that the folded SVM weights (large, from the Nystroem normalisation) amplified,
        # and whose size depended on how BLAS split the product over threads: P(FAKE) moved by up
        # to 8e-4 between one and two threads. sklearn's rbf_kernel upcasts the 16,000 x 360
        # landmarks on every call, which made one image 6 times slower; they are upcast once here.
        X = np.asarray(X, dtype=np.float64)
        landmarks, norms = self._landmarks64()
        squared = np.einsum("ij,ij->i", X, X)[:, None] + norms[None, :] - 2.0 * (X @ landmarks.T)
        return np.exp(-self.gamma * np.maximum(squared, 0.0))

    def _landmarks64(self) -> tuple[np.ndarray, np.ndarray]:
        """The landmarks in float64 and ``|l|^2`` per landmark, computed once per loaded model."""
        if getattr(self, "_cache", None) is None:
            landmarks = self.landmarks_.astype(np.float64)
            self._cache = landmarks, np.einsum("ij,ij->i", landmarks, landmarks)
        return self._cache

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state.pop("_cache", None)  # derived from landmarks_, so never stored in a checkpoint
        return state


def fold_nystroem(pipeline: Pipeline) -> Pipeline:
    """The same decision function, stored in m x d numbers instead of m x (d + m).

    Nystroem maps x to ``k(x) @ N.T`` (k: kernel values at the m landmarks, N: m x m), so the
    linear SVM's ``k(x) @ N.T @ w + b`` equals ``k(x) @ (w @ N).T + b``: an RBF expansion over
    the landmarks, the form of an SVM's support-vector expansion.
    """
    rbf, svm = pipeline.named_steps["rbf"], pipeline.named_steps["svm"]
    features = RbfFeatures(gamma=rbf.gamma)
    features.landmarks_ = rbf.components_.astype(np.float32)
    svm.coef_ = svm.coef_ @ rbf.normalization_
    pipeline.steps[[name for name, _ in pipeline.steps].index("rbf")] = ("rbf", features)
    return pipeline


def build_pipeline(recipe: SvmRecipe) -> Pipeline:
    """The untrained HOG -> scaler -> RBF features -> linear SVM pipeline of ``recipe``."""
    hog_features = HogFeatures(
        recipe.orientations,
        tuple(recipe.pixels_per_cell),
        recipe.cells_per_block,
        recipe.colour,
        tuple(recipe.smoothing),
    )
    n_features = hog_features.transform(np.zeros((1, SIZE * SIZE * 3), np.uint8)).shape[1]
    return Pipeline(
        [
            ("hog", hog_features),
            ("scale", StandardScaler()),
            # SVC's gamma="scale" is 1 / (n_features * var): 1 / n_features on standardised features.
            (
                "rbf",
                Nystroem(
                    gamma=recipe.gamma_scale / n_features, n_components=recipe.n_components, random_state=recipe.seed
                ),
            ),
            ("svm", PrimalSvm(C=recipe.C)),
        ]
    )


# The only types a stored SVM may contain beyond skops' defaults; anything else is refused.
TRUSTED_TYPES = (
    f"{HogFeatures.__module__}.{HogFeatures.__qualname__}",
    f"{RbfFeatures.__module__}.{RbfFeatures.__qualname__}",
    f"{PrimalSvm.__module__}.{PrimalSvm.__qualname__}",
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "sklearn.frozen._frozen.FrozenEstimator",
)
