"""Local features: what finds "this very object, photographed again" where a global
descriptor finds "images like this".

- `features`: OpenCV SIFT keypoints with RootSIFT descriptors and a perceptual hash, per image,
  as one compact blob (stored beside the image, derivable again from its bytes).
- `geometry`: descriptor matching (ratio test) and a transform estimated with RANSAC; the
  inlier count is what spatial re-ranking and near-duplicate confirmation use.
- `vlad`: a k-means codebook of RootSIFT descriptors and the VLAD aggregate (power and intra
  normalisation, PCA whitening), a global descriptor made of local features.

Pure computation (numpy, OpenCV, Pillow): no service client.
"""
