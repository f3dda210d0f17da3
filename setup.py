from setuptools import find_packages, setup

setup(
    name="domainbed_sc",
    version="0.1.0",
    description="A benchmark suite for shortcut learning and spurious correlations",
    license="MIT",
    python_requires=">=3.10",
    packages=find_packages(include=["domainbed_sc", "domainbed_sc.*"]),
    install_requires=[
        "torch>=2.1",
        "torchvision>=0.16",
        "numpy",
        "pandas",
        "tabulate",
        "submitit",
        "pillow",
        "tqdm",
        "pyyaml",
        "matplotlib",
        "scikit-learn",  # DFR's last-layer logistic regression
        "scipy",
        "torchmetrics",
    ],
    extras_require={"test": ["pytest"], "timm": ["timm>=1.0"], "tensorboard": ["tensorboard"]},
    entry_points={"console_scripts": ["domainbed-sc=domainbed_sc.cli:main"]},
)
