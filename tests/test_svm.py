import numpy as np

from cifake_models.data import load_split
from cifake_models.recipes import SvmRecipe
from cifake_models.svm import build_pipeline, fold_nystroem


def test_folding_the_nystroem_map_keeps_the_decision_function(tiny_data):
    split = load_split(tiny_data / "packed", "train")
    x = split.images.reshape(len(split), -1)
    pipeline = build_pipeline(SvmRecipe(n_components=20)).fit(x, split.labels)
    before = pipeline.decision_function(x)
    folded = fold_nystroem(pipeline)
    assert folded.named_steps["rbf"].landmarks_.shape == (20, 324)
    np.testing.assert_allclose(folded.decision_function(x), before, rtol=1e-4, atol=1e-4)


def test_hog_features_follow_dalal_and_triggs_layout():
    # 32x32, 8x8 cells, 2x2 blocks: 3x3 block positions x 4 cells x 9 orientations
    features = build_pipeline(SvmRecipe()).named_steps["hog"].transform(np.zeros((2, 32 * 32 * 3), np.uint8))
    assert features.shape == (2, 324) and features.dtype == np.float32


def test_multi_scale_and_colour_hog():
    image = np.random.default_rng(0).integers(0, 256, (1, 32 * 32 * 3), dtype=np.uint8)
    two_scales = build_pipeline(SvmRecipe(pixels_per_cell=(8, 16))).named_steps["hog"].transform(image)
    colour = build_pipeline(SvmRecipe(colour=True)).named_steps["hog"].transform(image)
    assert two_scales.shape == (1, 324 + 36) and colour.shape == (1, 324)
    assert not np.allclose(colour, build_pipeline(SvmRecipe()).named_steps["hog"].transform(image))


def test_smoothed_copies_add_the_hog_of_each_blurred_image():
    from scipy.ndimage import gaussian_filter
    from skimage.feature import hog

    from cifake_models.images import grayscale

    image = np.random.default_rng(0).integers(0, 256, (1, 32, 32, 3), dtype=np.uint8)
    plain = build_pipeline(SvmRecipe(pixels_per_cell=(8, 16))).named_steps["hog"].transform(image.reshape(1, -1))
    smoothed = (
        build_pipeline(SvmRecipe(pixels_per_cell=(8, 16), smoothing=(1.0, 2.0)))
        .named_steps["hog"]
        .transform(image.reshape(1, -1))
    )
    assert smoothed.shape == (1, 3 * 360)
    np.testing.assert_array_equal(smoothed[:, :360], plain)
    blurred = gaussian_filter(grayscale(image)[0], 2.0)
    expected = np.concatenate([hog(blurred, 9, (cell, cell), (2, 2), block_norm="L2-Hys") for cell in (8, 16)])
    np.testing.assert_allclose(smoothed[0, 720:], expected, rtol=1e-6, atol=1e-6)
    # Colour images are smoothed within each channel, never across them.
    colour = build_pipeline(SvmRecipe(colour=True, smoothing=(1.0,))).named_steps["hog"]
    level = colour.levels(colour.inputs(image)[0])[1]
    np.testing.assert_allclose(level[..., 0], gaussian_filter(image[0, ..., 0] / 255.0, 1.0), atol=1e-6)


def test_primal_svm_reaches_liblinears_optimum():
    from sklearn.svm import LinearSVC

    from cifake_models.svm import PrimalSvm

    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 12)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] + rng.normal(scale=0.7, size=400) > 0).astype(int)
    ours = PrimalSvm(C=0.5).fit(x, y)
    # liblinear also penalises the intercept unless it is scaled up; a large scaling removes that.
    reference = LinearSVC(C=0.5, intercept_scaling=1000, tol=1e-8, max_iter=100_000).fit(x, y)
    np.testing.assert_allclose(ours.coef_, reference.coef_, atol=2e-3)
    np.testing.assert_allclose(ours.intercept_, reference.intercept_, atol=2e-3)
    assert list(ours.classes_) == [0, 1] and (ours.predict(x) == reference.predict(x)).mean() > 0.99


def test_rbf_features_equal_sklearns_kernel():
    from sklearn.metrics.pairwise import rbf_kernel

    from cifake_models.svm import RbfFeatures

    rng = np.random.default_rng(0)
    landmarks = rng.normal(size=(50, 360)).astype(np.float32)
    # Points at a spread of distances from the landmarks, so kernel values span (0, 1).
    x = (landmarks + rng.normal(size=(50, 360)) * rng.uniform(0, 1.5, size=(50, 1))).astype(np.float32)
    features = RbfFeatures(gamma=2 / 360)
    features.landmarks_ = landmarks
    expected = rbf_kernel(x.astype(np.float64), landmarks.astype(np.float64), gamma=2 / 360)
    assert expected.max() > 0.5 and expected.std() > 0.05
    # float64 throughout, as sklearn: float32 products (errors near 1e-6) fail this, and their
    # rounding depended on the BLAS thread count, which moved the SVM's probabilities by 8e-4
    np.testing.assert_allclose(features.transform(x), expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(features.transform(landmarks[:3]).diagonal(), 1.0, atol=1e-12)
    assert "_cache" not in features.__getstate__()  # a cache, not part of what a checkpoint stores
