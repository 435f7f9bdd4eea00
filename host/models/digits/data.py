"""sklearn's 8x8 digits: the fixed train/test split and the patch tokenizer.

NumPy only (no torch), so the runtime reproduces exactly the images the
shipped model was trained and measured on. The data set ships inside
scikit-learn; nothing is downloaded.

Conventions (shared by training, the golden model and the accelerator):

- An image is 8x8 pixels, sklearn values 0..16, scaled to [0, 1] by / 16.
- Tokens are the 16 non-overlapping 2x2 patches in row-major patch order;
  the 4 values of a token are the patch's pixels in row-major order.
  Token ``t = 4 * pr + pc`` holds ``image[2*pr + i, 2*pc + j]`` at position
  ``2 * i + j``.
"""

import numpy as np

IMAGE_SIZE = 8
PATCH = 2
PATCHES_PER_SIDE = IMAGE_SIZE // PATCH          # 4
TOKENS = PATCHES_PER_SIDE * PATCHES_PER_SIDE    # 16
IN_FEATURES = PATCH * PATCH                     # 4
PIXEL_MAX = 16.0
CLASSES = 10

__all__ = ["load_digits_split", "patchify", "unpatchify",
           "IMAGE_SIZE", "PATCH", "TOKENS", "IN_FEATURES", "PIXEL_MAX", "CLASSES"]


def _split_indices(labels, seed, test_fraction):
    """Stratified split: per class, a seeded permutation; the first
    round(test_fraction * n_class) indices go to the test set.

    Uses the legacy ``np.random.RandomState``, whose streams NumPy keeps
    fixed across versions, so the split does not depend on the NumPy release.
    """
    rng = np.random.RandomState(seed)
    test = []
    for c in np.unique(labels):           # ascending class order: fixed draw order
        idx = np.flatnonzero(labels == c)
        perm = idx[rng.permutation(len(idx))]
        test.append(perm[:int(round(test_fraction * len(idx)))])
    test = np.sort(np.concatenate(test))
    train = np.setdiff1d(np.arange(len(labels)), test)   # sorted, disjoint
    return train, test


def load_digits_split(seed, test_fraction):
    """The fixed stratified split of sklearn's digits.

    Returns ``(x_train, y_train, x_test, y_test)``: images float32 of shape
    (n, 8, 8) in [0, 1] (sklearn's 0..16 divided by 16) and labels int64
    0..9, each set in the data set's original order. The same
    ``(seed, test_fraction)`` always gives the same sets.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if not isinstance(test_fraction, (float, int)) or not 0.0 < float(test_fraction) < 1.0:
        raise ValueError(f"test_fraction must lie strictly between 0 and 1, got {test_fraction!r}")
    from sklearn.datasets import load_digits      # local data, no download

    d = load_digits()
    images = (np.asarray(d.images, dtype=np.float64) / PIXEL_MAX).astype(np.float32)
    labels = np.asarray(d.target, dtype=np.int64)
    train, test = _split_indices(labels, int(seed), float(test_fraction))
    return images[train], labels[train], images[test], labels[test]


def patchify(images):
    """(n, 8, 8) or (n, 64) images -> (n, 16, 4) tokens.

    Token ``4 * pr + pc`` is the 2x2 patch at patch row pr, patch column pc;
    its values are ``image[2pr, 2pc], image[2pr, 2pc+1], image[2pr+1, 2pc],
    image[2pr+1, 2pc+1]``. The dtype is kept.
    """
    x = np.asarray(images)
    if x.ndim == 2 and x.shape[1] == IMAGE_SIZE * IMAGE_SIZE:
        x = x.reshape(-1, IMAGE_SIZE, IMAGE_SIZE)
    if x.ndim != 3 or x.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(f"images must have shape (n, 8, 8) or (n, 64), got {np.shape(images)}")
    n = x.shape[0]
    x = x.reshape(n, PATCHES_PER_SIDE, PATCH, PATCHES_PER_SIDE, PATCH)
    return np.ascontiguousarray(x.transpose(0, 1, 3, 2, 4)).reshape(n, TOKENS, IN_FEATURES)


def unpatchify(tokens):
    """Inverse of :func:`patchify`: (n, 16, 4) tokens -> (n, 8, 8) images."""
    t = np.asarray(tokens)
    if t.ndim != 3 or t.shape[1:] != (TOKENS, IN_FEATURES):
        raise ValueError(f"tokens must have shape (n, 16, 4), got {np.shape(tokens)}")
    n = t.shape[0]
    t = t.reshape(n, PATCHES_PER_SIDE, PATCHES_PER_SIDE, PATCH, PATCH)
    return np.ascontiguousarray(t.transpose(0, 1, 3, 2, 4)).reshape(n, IMAGE_SIZE, IMAGE_SIZE)
