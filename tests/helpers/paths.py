"""Where things are: the repository, the package, the shared data beside the checkout."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
WORKFLOW = REPO / "workflow"  # on sys.path (tests/conftest.py): `import afternoon`
SNAKEFILE = REPO / "Snakefile"
SHARED_DATA = REPO.parent / "shared" / "data"
MNIST_DIR = SHARED_DATA / "mnist"  # the real MNIST files, when this machine has them
# Debian's dataset-fashion-mnist: the real Fashion-MNIST files, recompressed (other gzip headers)
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
