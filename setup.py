"""Install tfzoo: `pip install -e .` (add `[test]` for the test suite, `[bench]` for benchmarks)."""
import pathlib
import re

from setuptools import find_packages, setup

HERE = pathlib.Path(__file__).parent
VERSION = re.search(r'__version__ = "([^"]+)"', (HERE / "tfzoo" / "__init__.py").read_text()).group(1)

setup(
    name="tfzoo",
    version=VERSION,
    description="A TensorFlow 2 / Keras 3 model zoo for classic object detectors, R-CNN to SSD.",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["tfzoo", "tfzoo.*"]),
    install_requires=[
        "tensorflow>=2.18",
        # keras < 3.13.2 has load-time code execution CVEs.
        "keras>=3.13.2",
        "tensorflow-datasets",
        # tensorflow-datasets 4.9 imports it when it prepares a dataset but declares it only
        # for Python < 3.9 (tensorflow/datasets#11212).
        "importlib_resources",
        "numpy",
        "pycocotools",
        "pillow",
        "defusedxml",
        "tqdm",
        "matplotlib",
        # TensorBoard logs of `tfzoo train` (TensorFlow no longer pulls it in).
        "tensorboard",
        # The TFLite interpreter: exports are verified and `.tflite` models run with it
        # (tf.lite.Interpreter is deprecated).
        "ai-edge-litert",
        # Selective search, the region proposals of R-CNN, SPP-Net and Fast R-CNN
        # (tfzoo.proposals: cv2.ximgproc, in the contrib build).
        "opencv-contrib-python-headless",
    ],
    extras_require={
        "test": ["pytest", "pytest-xdist"],
        # The peers of benchmarks/bench_model.py: KerasHub's RetinaNet, torchvision's SSD300.
        "bench": ["keras-hub", "torch", "torchvision"],
        # tfzoo convert of a torchvision .pth checkpoint (torch.load(weights_only=True)) and its
        # --check against torchvision; .safetensors files and Darknet .weights need neither.
        "convert": ["torch", "torchvision"],
    },
    entry_points={"console_scripts": ["tfzoo=tfzoo.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Image Recognition",
    ],
)
