"""Loading the code location imports no heavy library it does not need to define the graph.

Every run and step process imports ``cloudwaste_pipeline.definitions``; scikit-learn, skops,
dagster-aws and boto3 at load once made that cost three times ``import dagster, pandas,
sqlalchemy``. Not timed here (``benchmarks.import_cost`` prints the figures): a fresh interpreter
imports the definitions and no module of these libraries may be loaded. pyarrow and yaml are not
on the list: pandas and dagster import them themselves.
"""

import json
import subprocess
import sys
from pathlib import Path

from dagster_aws.s3.resources import ResourceWithS3Configuration

from cloudwaste_pipeline.defs.resources import S3Configuration

ROOT = Path(__file__).resolve().parent.parent
HEAVY = (
    "sklearn",
    "skops",
    "scipy",
    "joblib",
    "dagster_aws",
    "boto3",
    "botocore",
    "s3transfer",
    "moto",
    "azure",
    "alembic",
)
LOADED = """
import json, sys
import cloudwaste_pipeline.definitions
print(json.dumps([cloudwaste_pipeline.definitions.__file__, sorted(sys.modules)]))
"""


def loaded_by_definitions() -> tuple[str, set[str]]:
    """The definitions' file and the top-level packages a fresh interpreter has after
    importing them (run in the checkout, so its package is the one imported)."""
    done = subprocess.run(
        [sys.executable, "-c", LOADED], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    path, modules = json.loads(done.stdout.splitlines()[-1])
    return path, {name.split(".")[0] for name in modules}


def test_loading_the_definitions_imports_no_heavy_library():
    path, packages = loaded_by_definitions()
    assert path.startswith(str(ROOT)), path
    assert "dagster" in packages and "pandas" in packages  # the check sees real imports
    assert sorted(packages & set(HEAVY)) == []


def test_the_s3_fields_are_dagster_aws_ones():
    """Same names, types and defaults as ``S3Resource``'s, so their run config still applies."""

    def fields(cls: type) -> dict[str, tuple[str, object]]:
        return {n: (str(f.annotation), f.default) for n, f in cls.model_fields.items()}

    assert fields(S3Configuration) == fields(ResourceWithS3Configuration)
