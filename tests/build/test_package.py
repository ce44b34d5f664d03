"""Packaging checks on the `sam build` output: what Lambda would really run.

The functions and their layers are read from the built template (.aws-sam/build/template.yaml), so a new function
or layer is checked without touching this file. Each function is imported in a clean interpreter whose sys.path
holds only what Lambda would give it: the function package, its layers' python/ directories and the libraries the
python3.12 runtime ships (boto3 and its dependencies, linked from this virtualenv). LD_LIBRARY_PATH holds the layers'
lib/ directories, as /opt/lib is on Lambda's; the numeric layer's libgomp.so.1 (lightgbm's OpenMP) must load from there.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.build

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"
BUILD_DIR = ROOT / ".aws-sam" / "build"
BUILT_TEMPLATE = BUILD_DIR / "template.yaml"
SOURCE_DIRS = (ROOT / "functions", ROOT / "layers")

LAMBDA_UNZIPPED_LIMIT = 262_144_000  # 250 MB: function code plus all its layers, unzipped
PYTHON = "python3.12"
# What the Lambda python3.12 runtime provides (so it must not be bundled, and the import check must supply it).
RUNTIME_PROVIDED = ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "urllib3", "six")
# Bundled copies of these would shadow the runtime's SDK (and its boto3) and add tens of MB.
SDK_LIBRARIES = ("boto3", "botocore", "s3transfer")
IMPORT_TIMEOUT_S = 120
ENV = {
    "REDIS_URL": "redis://127.0.0.1:1",
    "BUCKET_NAME": "x",
    "STREAM_NAME": "x",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "POWERTOOLS_TRACE_DISABLED": "true",
    "POWERTOOLS_SERVICE_NAME": "recloop",
    "POWERTOOLS_METRICS_NAMESPACE": "RecLoop",
}
# Runs inside the clean interpreter: argv[1] is the handler ("app.lambda_handler"), argv[2:] the sys.path entries.
IMPORT_PROBE = textwrap.dedent(
    """
    import importlib, sys
    module_name, _, attribute = sys.argv[1].rpartition(".")
    sys.path[:0] = sys.argv[2:]
    module = importlib.import_module(module_name)
    handler = getattr(module, attribute, None)
    if not callable(handler):
        raise SystemExit(f"{sys.argv[1]} is not callable: {handler!r}")
    print("IMPORTED", module.__file__)
    """
)
# Same argv convention. Imports the handler module and lists the heavy numeric modules it loaded on the way.
NUMERIC_MODULES_PROBE = textwrap.dedent(
    """
    import importlib, json, sys
    sys.path[:0] = sys.argv[2:]
    importlib.import_module(sys.argv[1].rpartition(".")[0])
    loaded = sorted(m for m in sys.modules if m.partition(".")[0] in ("numpy", "scipy", "lightgbm"))
    print("MODULES", json.dumps(loaded))
    """
)
# Same argv convention (argv[1] unused). Trains and predicts with a tiny LightGBM model on several OpenMP threads,
# then reports which libgomp the process mapped.
LIGHTGBM_PROBE = textwrap.dedent(
    """
    import json, sys, time
    sys.path[:0] = sys.argv[2:]
    started = time.perf_counter()
    import lightgbm
    import_seconds = time.perf_counter() - started
    import numpy as np
    rng = np.random.default_rng(7)
    features = rng.normal(size=(400, 5))
    labels = (features[:, 0] - features[:, 1] > 0).astype(np.int32)
    params = {"objective": "binary", "num_threads": 2, "min_data_in_leaf": 5, "verbose": -1}
    booster = lightgbm.train(params, lightgbm.Dataset(features, labels), num_boost_round=20)
    scores = booster.predict(features)
    with open("/proc/self/maps") as maps:
        libgomp = sorted({line.split()[-1] for line in maps if "libgomp" in line})
    print("RESULT", json.dumps({
        "import_seconds": import_seconds,
        "accuracy": float(((scores > 0.5) == labels).mean()),
        "predictions": int(scores.shape[0]),
        "libgomp": libgomp,
        "modules": [lightgbm.__file__, np.__file__],
    }))
    """
)
# Functions that must stay small and fast to start: no numpy/scipy/lightgbm in their layers.
NUMERIC_FREE_FUNCTIONS = ("EventFunction", "OpsFunction")
# Functions that load model versions (serve, promote, update, train): every model kind must load in them.
MODEL_LOADING_FUNCTIONS = ("RecommendFunction", "MlopsFunction", "OnlineUpdateFunction", "TrainFunction")


# ---------------------------------------------------------------------------------------------------------------------
# Reading the built template
# ---------------------------------------------------------------------------------------------------------------------
class _CfnLoader(yaml.SafeLoader):
    """A YAML loader that turns CloudFormation short forms (!Ref, !GetAtt, !Sub, ...) into their long forms."""


def _construct_cfn_tag(loader: yaml.SafeLoader, tag_suffix: str, node: yaml.Node) -> dict[str, Any]:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    name = "Ref" if tag_suffix == "Ref" else f"Fn::{tag_suffix}"
    if name == "Fn::GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {name: value}


_CfnLoader.add_multi_constructor("!", _construct_cfn_tag)


@dataclass
class BuiltFunction:
    name: str
    code_dir: Path
    handler: str
    layers: list[Path] = field(default_factory=list)
    external_layers: list[Any] = field(default_factory=list)  # ARNs outside this template: not checkable here

    @property
    def dirs(self) -> list[Path]:
        return [self.code_dir, *self.layers]


def _newest_source_mtime() -> float:
    newest = TEMPLATE.stat().st_mtime
    for top in SOURCE_DIRS:
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames[:] = [d for d in dirnames if d != "__pycache__" and not d.endswith(".egg-info")]
            for filename in filenames:
                newest = max(newest, os.stat(os.path.join(dirpath, filename)).st_mtime)
    return newest


def _sam_executable() -> str:
    local = Path(sys.executable).with_name("sam")
    found = str(local) if local.exists() else shutil.which("sam")
    if not found:
        pytest.fail("sam (aws-sam-cli) is not installed; run `make setup`")
    return found


def _ensure_build() -> None:
    if BUILT_TEMPLATE.exists() and BUILT_TEMPLATE.stat().st_mtime >= _newest_source_mtime():
        return
    env = {**os.environ, "SAM_CLI_TELEMETRY": "0"}
    result = subprocess.run(
        [_sam_executable(), "build", "--cached", "--parallel"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"sam build failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")


def _layer_import_roots(layer_dir: Path) -> list[Path]:
    """The directories Lambda puts on sys.path for a layer extracted to /opt."""
    candidates = (layer_dir / "python" / "lib" / "python3.12" / "site-packages", layer_dir / "python")
    return [p for p in candidates if p.is_dir()]


def _read_built_functions() -> list[BuiltFunction]:
    template = yaml.load(BUILT_TEMPLATE.read_text(), Loader=_CfnLoader)  # a SafeLoader subclass
    resources: dict[str, dict[str, Any]] = template.get("Resources", {})
    global_function = (template.get("Globals") or {}).get("Function") or {}

    layer_dirs: dict[str, Path] = {}
    for name, resource in resources.items():
        if resource.get("Type") in ("AWS::Serverless::LayerVersion", "AWS::Lambda::LayerVersion"):
            props = resource.get("Properties") or {}
            content = props.get("ContentUri", props.get("Content"))
            if isinstance(content, str) and (BUILD_DIR / content).is_dir():
                layer_dirs[name] = BUILD_DIR / content

    functions = []
    for name, resource in resources.items():
        if resource.get("Type") != "AWS::Serverless::Function":
            continue
        props = {**global_function, **(resource.get("Properties") or {})}
        if props.get("PackageType") == "Image" or "InlineCode" in props:
            continue
        code_uri = props.get("CodeUri")
        assert isinstance(code_uri, str), f"{name}: CodeUri {code_uri!r} is not a built directory"
        function = BuiltFunction(name, BUILD_DIR / code_uri, props.get("Handler", "app.lambda_handler"))
        # SAM Globals: list properties are additive (global entries first).
        own_layers = (resource.get("Properties") or {}).get("Layers") or []
        for layer in [*(global_function.get("Layers") or []), *own_layers]:
            ref = layer.get("Ref") if isinstance(layer, dict) else None
            if ref in layer_dirs:
                function.layers.append(layer_dirs[ref])
            else:
                function.external_layers.append(layer)
        functions.append(function)
    return functions


def _tree_size(path: Path) -> int:
    total = 0
    for dirpath, _dirnames, filenames in os.walk(path):
        for filename in filenames:
            file_path = os.path.join(dirpath, filename)
            if not os.path.islink(file_path):
                total += os.path.getsize(file_path)
    return total


# ---------------------------------------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def built_functions() -> list[BuiltFunction]:
    _ensure_build()
    functions = _read_built_functions()
    assert functions, f"no functions found in {BUILT_TEMPLATE}"
    for function in functions:
        assert (function.code_dir / (function.handler.rpartition(".")[0] + ".py")).is_file(), function
    return functions


@pytest.fixture(scope="session")
def runtime_libs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding only what the Lambda python3.12 runtime provides, linked from this virtualenv."""
    target = tmp_path_factory.mktemp("lambda-runtime")
    for name in RUNTIME_PROVIDED:
        spec = importlib.util.find_spec(name)
        assert spec is not None and spec.origin, f"{name} is not installed in {sys.prefix}"
        origin = Path(spec.origin)
        source = origin.parent if origin.name == "__init__.py" else origin
        (target / source.name).symlink_to(source, target_is_directory=source.is_dir())
    return target


@pytest.fixture(scope="session")
def clean_python() -> str:
    """The real python3.12 binary (a pyenv shim only works from inside a directory that selects a version)."""
    found = shutil.which(PYTHON)
    if found:
        result = subprocess.run(
            [found, "-I", "-S", "-c", "import sys; print(sys.executable)"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if result.returncode == 0 and result.stdout.strip():
            return result.stdout.strip()
    if sys.version_info[:2] == (3, 12):
        return sys.executable
    pytest.fail(f"{PYTHON} is not on PATH (the Lambda runtime is python3.12)")


@pytest.fixture(scope="session")
def import_in_clean_interpreter(clean_python: str, runtime_libs: Path):
    """Import a handler with Lambda's sys.path: code dir, layers' python/ dirs, then the runtime's libraries."""

    def run(
        code_dir: Path, layers: list[Path], handler: str = "app.lambda_handler", probe: str = IMPORT_PROBE
    ) -> subprocess.CompletedProcess:
        paths = [code_dir] + [root for layer in layers for root in _layer_import_roots(layer)] + [runtime_libs]
        lib_dirs = [str(layer / "lib") for layer in layers if (layer / "lib").is_dir()]
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(code_dir), "LANG": "C.UTF-8", **ENV}
        if lib_dirs:
            env["LD_LIBRARY_PATH"] = os.pathsep.join(lib_dirs)
        # -I: no PYTHON* variables, no user site, no cwd on sys.path; -S: no site-packages of this machine;
        # -B: no __pycache__ written into the build output (it would be deployed and counted).
        return subprocess.run(
            [clean_python, "-I", "-S", "-B", "-c", probe, handler, *map(str, paths)],
            cwd=code_dir,
            env=env,
            capture_output=True,
            text=True,
            timeout=IMPORT_TIMEOUT_S,
            check=False,
        )

    return run


_SIZES: dict[str, int] = {}
_TIMINGS: dict[str, float] = {}


@pytest.fixture(scope="module", autouse=True)
def _report_sizes(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if not (_SIZES or _TIMINGS) or reporter is None:
        return
    lines = [
        f"{name:<28} {size / 1e6:8.1f} MB  ({size / LAMBDA_UNZIPPED_LIMIT:5.1%} of the 250 MB limit)"
        for name, size in sorted(_SIZES.items())
    ]
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        reporter.write_line("")
        if lines:
            reporter.write_sep("-", "built package sizes (function + its layers, unzipped)")
            for line in lines:
                reporter.write_line(line)
        for name, seconds in sorted(_TIMINGS.items()):
            reporter.write_line(f"{name}: {seconds:.2f} s")


# ---------------------------------------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------------------------------------
def test_each_function_with_its_layers_fits_lambda_unzipped_limit(
    built_functions: list[BuiltFunction], record_property: Any
) -> None:
    too_big = []
    for function in built_functions:
        size = sum(_tree_size(d) for d in function.dirs)
        _SIZES[function.name] = size
        record_property(f"{function.name}_unzipped_bytes", size)
        print(f"{function.name}: {size / 1e6:.1f} MB unzipped ({', '.join(d.name for d in function.dirs)})")
        if size >= LAMBDA_UNZIPPED_LIMIT:
            too_big.append(f"{function.name}: {size / 1e6:.1f} MB")
    assert not too_big, f"over Lambda's 250 MB unzipped limit: {too_big}"


def test_each_built_function_imports_in_a_clean_interpreter(
    built_functions: list[BuiltFunction], import_in_clean_interpreter: Any
) -> None:
    failures = []
    for function in built_functions:
        result = import_in_clean_interpreter(function.code_dir, function.layers, function.handler)
        if result.returncode != 0 or "IMPORTED" not in result.stdout:
            failures.append(f"--- {function.name} (exit {result.returncode})\n{result.stderr[-3000:]}")
        else:
            imported_from = Path(result.stdout.split("IMPORTED", 1)[1].strip())
            if not imported_from.is_relative_to(function.code_dir):
                failures.append(f"--- {function.name}: handler imported from {imported_from}, not the built package")
    assert not failures, "\n".join(failures)


def test_the_aws_sdk_is_not_bundled(built_functions: list[BuiltFunction]) -> None:
    """The runtime provides boto3; a bundled copy wastes space and pins an SDK the runtime would otherwise update."""
    checked: set[Path] = set()
    bundled: dict[str, list[str]] = {}
    for function in built_functions:
        roots = [function.code_dir] + [root for layer in function.layers for root in _layer_import_roots(layer)]
        for root in roots:
            if root in checked:
                continue
            checked.add(root)
            for path in root.iterdir():
                for lib in RUNTIME_PROVIDED:
                    top_level = path.name in (lib, f"{lib}.py")
                    metadata = path.name.startswith(f"{lib}-") and path.name.endswith((".dist-info", ".egg-info"))
                    if top_level or metadata:
                        bundled.setdefault(lib, []).append(str(path.relative_to(BUILD_DIR)))
    shadowing = {lib: paths for lib, paths in bundled.items() if lib in SDK_LIBRARIES}
    assert not shadowing, f"the runtime's AWS SDK is bundled: {shadowing}"


def test_import_check_fails_for_a_package_missing_a_module(
    built_functions: list[BuiltFunction], import_in_clean_interpreter: Any, tmp_path: Path
) -> None:
    """Negative control: the import check must catch a module that is not in the package."""
    recommend = next((f for f in built_functions if f.name == "RecommendFunction"), built_functions[0])
    broken = tmp_path / recommend.code_dir.name
    shutil.copytree(recommend.code_dir, broken)
    (broken / "app.py").write_text(
        "from recloop.core.settings import get_settings\n"
        "import recloop_module_that_was_never_packaged  # noqa: F401\n"
        "lambda_handler = get_settings\n"
    )
    result = import_in_clean_interpreter(broken, recommend.layers)
    assert result.returncode != 0
    assert "ModuleNotFoundError: No module named 'recloop_module_that_was_never_packaged'" in result.stderr


def test_import_check_fails_without_the_layers(
    built_functions: list[BuiltFunction], import_in_clean_interpreter: Any
) -> None:
    """Negative control: nothing from this machine leaks in, so a function without its layer cannot import."""
    function = next(f for f in built_functions if f.layers)
    result = import_in_clean_interpreter(function.code_dir, [], function.handler)
    assert result.returncode != 0
    assert "ModuleNotFoundError" in result.stderr, result.stderr[-2000:]


def _function(built_functions: list[BuiltFunction], name: str) -> BuiltFunction:
    found = next((f for f in built_functions if f.name == name), None)
    assert found is not None, f"{name} is not in {BUILT_TEMPLATE}"
    return found


def test_lightgbm_trains_and_predicts_with_the_recommend_layers(
    built_functions: list[BuiltFunction], import_in_clean_interpreter: Any, record_property: Any
) -> None:
    """numpy and lightgbm come from the layers, and lightgbm's libgomp.so.1 from a layer's lib/ (/opt/lib on Lambda),
    not from this machine: the Lambda runtime has no libgomp."""
    recommend = _function(built_functions, "RecommendFunction")
    lib_dirs = [layer / "lib" for layer in recommend.layers if (layer / "lib" / "libgomp.so.1").is_file()]
    assert lib_dirs, f"no layer of RecommendFunction ships lib/libgomp.so.1: {recommend.layers}"

    result = import_in_clean_interpreter(recommend.code_dir, recommend.layers, probe=LIGHTGBM_PROBE)
    assert result.returncode == 0 and "RESULT" in result.stdout, result.stderr[-3000:]
    report = json.loads(result.stdout.split("RESULT", 1)[1])

    assert report["predictions"] == 400
    assert report["accuracy"] > 0.9, report
    for module in report["modules"]:
        assert any(Path(module).is_relative_to(layer) for layer in recommend.layers), f"{module} is not from a layer"
    assert report["libgomp"], "lightgbm ran without mapping libgomp"
    for mapped in report["libgomp"]:
        assert any(Path(mapped).resolve().is_relative_to(d.resolve()) for d in lib_dirs), (
            f"libgomp was loaded from {mapped}, not from a layer's lib/ ({lib_dirs})"
        )
    _TIMINGS["import lightgbm, clean interpreter (RecommendFunction layers)"] = report["import_seconds"]
    record_property("import_lightgbm_seconds", report["import_seconds"])
    print(f"import lightgbm: {report['import_seconds']:.2f} s; libgomp from {report['libgomp']}")


def test_recommend_handler_does_not_import_scipy(
    built_functions: list[BuiltFunction], import_in_clean_interpreter: Any
) -> None:
    """scipy (pulled in by lightgbm) costs most of a second of import: models load it lazily, off the cold start."""
    recommend = _function(built_functions, "RecommendFunction")
    result = import_in_clean_interpreter(
        recommend.code_dir, recommend.layers, recommend.handler, probe=NUMERIC_MODULES_PROBE
    )
    assert result.returncode == 0 and "MODULES" in result.stdout, result.stderr[-3000:]
    loaded = json.loads(result.stdout.split("MODULES", 1)[1])
    assert "scipy" not in loaded, f"importing {recommend.handler} imported scipy: {loaded}"


def test_small_functions_do_not_carry_the_numeric_layer(built_functions: list[BuiltFunction]) -> None:
    for name in NUMERIC_FREE_FUNCTIONS:
        function = _function(built_functions, name)
        roots = [function.code_dir] + [root for layer in function.layers for root in _layer_import_roots(layer)]
        heavy = [str(root / lib) for root in roots for lib in ("numpy", "scipy", "lightgbm") if (root / lib).exists()]
        assert not heavy, f"{name} ships numeric libraries it does not need: {heavy}"


# Same argv convention. Imports the handler, then loads a tiny bundle of every trained kind through
# recloop.models.loading.load_model, as serving and promotion do; reports the kinds that loaded.
MODEL_LOADING_PROBE = textwrap.dedent(
    """
    import importlib, json, sys
    sys.path[:0] = sys.argv[2:]
    importlib.import_module(sys.argv[1].rpartition(".")[0])
    from recloop.models.loading import KIND_MODULES, LOADERS, load_model
    before = sorted(LOADERS)
    loaded = []
    import numpy as np
    from recloop.models.bundle import ModelKind, ModelMetadata
    from recloop.models.mf import MatrixFactorisation
    mf = MatrixFactorisation(["i1", "i2"], np.ones((2, 2), np.float32), ["u1"], np.ones((1, 2), np.float32), 0.1, 1.0)
    bundle = mf.to_bundle(ModelMetadata(version="mf-probe", kind=ModelKind.MF))
    loaded.append(type(load_model(bundle)).__name__)
    print("LOADERS", json.dumps({"before": before, "kinds": sorted(k.value for k in KIND_MODULES), "loaded": loaded}))
    """
)


def test_the_online_update_function_imports_with_its_layers(
    built_functions: list[BuiltFunction], import_in_clean_interpreter: Any
) -> None:
    """The stream consumer ships with the core and numeric layers (an update works on numpy vectors, a rollback loads
    the version it promotes), imports cleanly with them, and leaves numpy to the first update or rollback: a batch
    that fills no buffer never loads it."""
    online = _function(built_functions, "OnlineUpdateFunction")
    assert [layer.name for layer in online.layers] == ["CoreLayer", "NumericLayer"], online.layers
    result = import_in_clean_interpreter(online.code_dir, online.layers, online.handler)
    assert result.returncode == 0 and "IMPORTED" in result.stdout, result.stderr[-3000:]
    result = import_in_clean_interpreter(online.code_dir, online.layers, online.handler, probe=NUMERIC_MODULES_PROBE)
    assert result.returncode == 0 and "MODULES" in result.stdout, result.stderr[-3000:]
    assert json.loads(result.stdout.split("MODULES", 1)[1]) == []


@pytest.mark.parametrize("name", MODEL_LOADING_FUNCTIONS)
def test_functions_that_load_models_load_them_with_their_layers(
    name: str, built_functions: list[BuiltFunction], import_in_clean_interpreter: Any
) -> None:
    """load_model imports a kind's module itself when nothing imported it yet (numpy stays off cold starts)."""
    function = _function(built_functions, name)
    result = import_in_clean_interpreter(
        function.code_dir, function.layers, function.handler, probe=MODEL_LOADING_PROBE
    )
    assert result.returncode == 0 and "LOADERS" in result.stdout, result.stderr[-3000:]
    report = json.loads(result.stdout.split("LOADERS", 1)[1])
    assert report["kinds"] == ["lgbm", "mf"] and report["loaded"] == ["MatrixFactorisation"]
    if name != "TrainFunction":  # training imports its models up front; the others must not
        assert report["before"] == []
