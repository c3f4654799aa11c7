"""Packaging for flask-evstream (metadata lives here; pyproject.toml names the build backend)."""

import re
from pathlib import Path

from setuptools import find_packages, setup

here = Path(__file__).parent
version = re.search(
    r'^__version__ = "([^"]+)"', (here / "flask_evstream" / "__init__.py").read_text(), re.M
)
assert version is not None

# gevent 26 publishes no wheels for Python 3.9 (end of life in October 2025),
# so pip would compile it there, which needs a C toolchain and takes minutes.
# 25.9 is the last release with cp39 wheels; newer Pythons take any release.
GEVENT = [
    'gevent>=23.9,<26; python_version < "3.10"',
    'gevent>=23.9; python_version >= "3.10"',
]

setup(
    name="flask-evstream",
    version=version.group(1),
    description="Server-Sent Events for Flask: stream a sync generator, served by gunicorn + gevent",
    long_description=(here / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="BSD-3-Clause",
    packages=find_packages(include=["flask_evstream", "flask_evstream.*"]),
    package_data={"flask_evstream": ["py.typed", "static/evstream.js"]},
    python_requires=">=3.9",
    install_requires=["flask>=2.3"],
    extras_require={
        "gevent": [*GEVENT, "gunicorn[gevent]>=21.2"],
        "redis": ["redis>=5"],
        # Event data encoded by orjson where its bytes are the standard library's.
        "fast": ["orjson>=3.9"],
        "metrics": ["prometheus_client>=0.17"],
        "tests": [
            "orjson>=3.9",
            "pytest>=7.4",
            "hypothesis>=6.83",
            "httpx>=0.27",
            "httpx-sse>=0.4.2",
            "sseclient-py>=1.8",
            "requests>=2.31",
            "requests-sse>=0.3",
            "openai>=1.30",
            "flask-cors>=4",
            "playwright>=1.40",
            "trustme>=1.1",
            "cryptography>=3.1",
            "h2>=4.1",  # gunicorn's own HTTP/2, which tests/test_http2.py shows stalling
            *GEVENT,
            "gunicorn>=21.2",
            "mypy>=1.8",
            "ruff>=0.4",
            "tox>=4",
            "prometheus_client>=0.17",
        ],
        "bench": ["sse-starlette>=2", "uvicorn>=0.29"],
        "docs": ["sphinx>=7", "pallets-sphinx-themes>=2.1", "prometheus_client>=0.17"],
    },
    classifiers=[
        "Framework :: Flask",
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3.9",
        "Programming Language :: Python :: 3.10",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Programming Language :: Python :: 3.13",
        "Typing :: Typed",
    ],
)
