"""2D slice datasets: slice caches made from image folders, slice manifests or 3D preprocessing caches."""
