from setuptools import find_packages, setup

EXTRAS = {
    "dali": ["nvidia-dali-cuda130"],
    "umap": ["umap-learn>=0.5", "matplotlib>=3.7"],
    "h5": ["h5py>=3.8"],
    "wandb": ["wandb>=0.16"],
    "plot": ["matplotlib>=3.7"],  # curves.png at the end of a run, python -m solo.plot
    # CI tests every optional path: DALI runs its pipelines on the CPU where there is no GPU
    "dev": ["pytest>=7.4", "h5py>=3.8", "nvidia-dali-cuda130", "umap-learn>=0.5", "matplotlib>=3.7"],
}

setup(
    name="solo",
    version="0.1.0",
    description="Self-supervised visual representation learning with PyTorch Lightning and Hydra",
    long_description=open("README.md").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["solo", "solo.*"]),
    package_data={"solo": ["data/*.txt", "zoo/manifest.json"]},
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.3",
        "torchvision>=0.18",
        "lightning>=2.3",
        "torchmetrics>=1.3",
        "hydra-core>=1.3",
        "omegaconf>=2.3",
        "timm>=1.0",
        "pillow>=10",
        "numpy",
    ],
    extras_require=EXTRAS,
)
