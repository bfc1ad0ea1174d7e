"""The lab notebook: committed clean, and run top to bottom on a small demo set it shows the lab."""

from __future__ import annotations

import ast
import base64
import io
import json
import sys
from pathlib import Path
from typing import NamedTuple

import pytest
from PIL import Image

from bloodcells.data.sources.synthetic import SYNTHETIC_NOTICE

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "lab1_blood_cells.ipynb"
WIDGET = "application/vnd.jupyter.widget-view+json"
DEFAULTS = {"DATA": "data/bloodcells_small", "EPOCHS": 5, "SEED": 0, "DEVICE": None}
VARIANTS = (
    "advanced, as is",
    "(a) bn2",
    "(b) dropout 0.3",
    "(c) extra fc 32",
    "(d) lr 1e-3",
    "(d) lr 5e-5",
)
TRAINING_CELLS = ("train-simple", "train-advanced", "train-vgg16")
FIGURE_CELLS = ("sample-grid", "predictions", "gradcam-advanced", "gradcam-vgg16", "top-losses")

# What the test runs with: small enough for about a minute on two busy cores.
EPOCHS = 1
DEMO_PER_CLASS = 30  # and 7 test images per class
VGG_PER_CLASS = 10

# Appended after the last cell: what the kernel ended with, as one line of JSON.
CHECKS = """
import json
lives = {"simple": simple_live, "advanced": advanced_live, "vgg16": vgg_live}
histories = {"simple": simple_history, "advanced": advanced_history, "vgg16": vgg_history}
print("CHECKS " + json.dumps({
    "epochs": {name: len(history) for name, history in histories.items()},
    "dev_loss_points": {name: len(live.loss.data[1].y) for name, live in lives.items()},
    "matrix_titles": {name: live.matrix.layout.title.text for name, live in lives.items()},
    "variants": sorted(variants),
    "vgg_train": len(rgb.train),
    "data_root": str(data_root),
}))
"""


class Executed(NamedTuple):
    nb: nbformat.NotebookNode
    tmp: Path
    checks: dict


def read_notebook() -> nbformat.NotebookNode:
    return nbformat.read(NOTEBOOK, as_version=4)


def parameters_index(nb) -> int:
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "the notebook needs exactly one cell tagged 'parameters'"
    return tagged[0]


def cell(nb, cell_id: str):
    found = [c for c in nb.cells if c.get("id") == cell_id]
    assert found, f"no cell with id {cell_id!r}"
    return found[0]


def text_of(c) -> str:
    """Everything a cell printed or displayed as text."""
    parts = []
    for out in c.get("outputs", []):
        if out.output_type == "stream":
            parts.append(out.text)
        for mime in ("text/plain", "text/html"):
            parts.append(str(out.get("data", {}).get(mime, "")))
    return "\n".join(parts)


def pngs(c) -> list[Image.Image]:
    return [
        Image.open(io.BytesIO(base64.b64decode(out.data["image/png"])))
        for out in c.get("outputs", [])
        if "image/png" in out.get("data", {})
    ]


def kernel_path(tmp: Path) -> Path:
    """A JUPYTER_PATH whose python3 kernel is this interpreter, whatever else is installed."""
    spec = tmp / "jupyter" / "kernels" / "python3"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    kernel = {"argv": argv, "display_name": "Python 3 (bloodcells tests)", "language": "python"}
    (spec / "kernel.json").write_text(json.dumps(kernel), encoding="utf-8")
    return tmp / "jupyter"


def injected_parameters(tmp: Path) -> str:
    """The papermill-style cell that follows the parameters cell."""
    return "\n".join(
        [
            f"DATA = {str(tmp / 'absent')!r}  # no such folder: the demo set is used",
            f"EPOCHS = {EPOCHS}",
            'DEVICE = "cpu"',
            f"DEMO_PER_CLASS = {DEMO_PER_CLASS}",
            f"VGG_PER_CLASS = {VGG_PER_CLASS}",
            "import sys",
            f"assert sys.prefix == {sys.prefix!r}, sys.prefix  # the kernel runs our environment",
        ]
    )


@pytest.fixture(scope="module")
def executed(tmp_path_factory) -> Executed:
    """The notebook run top to bottom in a fresh kernel; a cell that fails fails the fixture."""
    tmp = tmp_path_factory.mktemp("notebook")
    nb = read_notebook()
    injected = nbformat.v4.new_code_cell(injected_parameters(tmp))
    injected.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(parameters_index(nb) + 1, injected)
    nb.cells.append(nbformat.v4.new_code_cell(CHECKS.strip(), id="test-checks"))
    with pytest.MonkeyPatch.context() as mp:  # the kernel inherits this environment
        mp.setenv("BLOODCELLS_CACHE", str(tmp / "cache"))
        mp.setenv("JUPYTER_PATH", str(kernel_path(tmp)))
        mp.setenv("IPYTHONDIR", str(tmp / "ipython"))
        client = nbclient.NotebookClient(
            nb,
            kernel_name="python3",
            timeout=300,
            startup_timeout=120,
            store_widget_state=False,
            resources={"metadata": {"path": str(tmp)}},
        )
        client.execute()
    line = next(s for s in text_of(cell(nb, "test-checks")).splitlines() if s.startswith("CHECKS"))
    return Executed(nb, tmp, json.loads(line.removeprefix("CHECKS ")))


def test_the_committed_notebook_has_no_outputs_and_the_lab_parameters():
    nb = read_notebook()
    for c in nb.cells:
        if c.cell_type == "code":
            assert c.outputs == [] and c.execution_count is None, f"cell {c.id} has outputs"
    assert nb.metadata.kernelspec.name == "python3"
    tree = ast.parse(nb.cells[parameters_index(nb)].source)
    values = {
        target.id: ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign)
        for target in node.targets
    }
    assert DEFAULTS.items() <= values.items()
    assert {"DEMO_PER_CLASS", "VGG_PER_CLASS"} <= values.keys()
    exercises = [c for c in nb.cells if "exercise" in c.metadata.get("tags", [])]
    assert len(exercises) == 3
    assert all("# YOUR CODE HERE" in c.source for c in exercises)
    solutions = [c for c in nb.cells if "solution" in c.metadata.get("tags", [])]
    assert solutions and all(c.source.startswith("# SOLUTION") for c in solutions)


def test_without_data_the_notebook_uses_the_demo_set_and_says_it_is_synthetic(executed):
    printed = text_of(cell(executed.nb, "load-data"))
    assert SYNTHETIC_NOTICE in printed
    assert Path(executed.checks["data_root"]).parent == executed.tmp / "cache"
    assert f"Training samples: {5 * DEMO_PER_CLASS}" in printed
    assert "[SYNTHETIC]" in text_of(cell(executed.nb, "class-sizes"))


def test_every_model_trains_for_the_epochs_asked_with_a_live_plot(executed):
    checks = executed.checks
    assert checks["epochs"] == {"simple": EPOCHS, "advanced": EPOCHS, "vgg16": EPOCHS}
    assert set(checks["dev_loss_points"].values()) == {EPOCHS}
    for title in checks["matrix_titles"].values():
        assert f"epoch {EPOCHS}, dev accuracy" in title
    for cell_id in TRAINING_CELLS:
        outputs = cell(executed.nb, cell_id).outputs
        widgets = [out for out in outputs if WIDGET in out.get("data", {})]
        assert len(widgets) == 2, f"{cell_id}: loss and confusion matrix widgets expected"
    # VGG16 on the CPU trains on VGG_PER_CLASS images of each of the five classes
    assert checks["vgg_train"] == 5 * VGG_PER_CLASS
    assert f"at most {VGG_PER_CLASS} images per class" in text_of(cell(executed.nb, "vgg-data"))


def test_the_figures_and_grad_cam_maps_are_drawn(executed):
    for cell_id in FIGURE_CELLS:
        images = pngs(cell(executed.nb, cell_id))
        assert len(images) == 1, f"{cell_id}: one PNG expected"
        image = images[0].convert("L")
        assert image.width > 400, cell_id
        low, high = image.getextrema()
        assert high - low > 100, f"{cell_id}: the image is nearly uniform"
    # one row of maps per layer: VGG16's four layers make a taller figure than the lab's two
    advanced = pngs(cell(executed.nb, "gradcam-advanced"))[0]
    vgg = pngs(cell(executed.nb, "gradcam-vgg16"))[0]
    assert vgg.height / vgg.width > advanced.height / advanced.width


def test_exercise_3_ends_in_a_table_of_every_variant(executed):
    table = text_of(cell(executed.nb, "comparison"))
    for name in VARIANTS:
        assert name in table
    assert "[SYNTHETIC]" in table
    assert executed.checks["variants"] == sorted(VARIANTS)


def test_the_exercise_cells_run_as_given_and_the_solutions_answer_them(executed):
    nb = executed.nb
    assert "input: (8, 1, 32, 32)" in text_of(cell(nb, "exercise1"))
    assert "after pool:    (8, 1, 15, 15)" in text_of(cell(nb, "solution1"))
    assert "Dev accuracy:" in text_of(cell(nb, "exercise2"))
    answer = text_of(cell(nb, "solution2"))
    assert "Dev accuracy:" in answer and "Chance level, guessing uniformly: 20%" in answer


def test_the_notebook_imports_only_public_names():
    """Every `from bloodcells... import name` names a package's __all__, never a module inside."""
    import importlib

    imports = []
    for c in read_notebook().cells:
        if c.cell_type != "code":
            continue
        source = "\n".join(line for line in c.source.splitlines() if not line.startswith("%"))
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ImportFrom) and node.module.startswith("bloodcells"):
                imports.append(node)
    assert imports
    for node in imports:
        module = importlib.import_module(node.module)
        assert module.__file__.endswith("__init__.py"), f"{node.module} is not a package"
        for alias in node.names:
            assert alias.name in module.__all__, f"{alias.name} is not public in {node.module}"
