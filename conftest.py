"""pytest configuration shared by the unit tests and the nbval notebook run.

nbval compares every stream a cell prints, stderr included. Warnings (coremltools on Linux, torch
deprecations) and tqdm progress bars go to stderr and differ between machines, so stderr is
dropped from both sides before nbval compares a cell: only stdout and rich outputs are checked.

MPLBACKEND is deliberately left alone: the notebook kernels inherit this process's environment and
need matplotlib's inline backend; the unit tests pick Agg themselves.
"""
try:
    import nbval.plugin as _nbval_plugin
except ImportError:  # nbval not installed: plain unit-test run
    _nbval_plugin = None


def _drop_stderr(outputs):
    return [o for o in outputs if not (o.get("output_type") == "stream" and o.get("name") == "stderr")]


if _nbval_plugin is not None and not getattr(_nbval_plugin.IPyNbCell, "_swiftlib_no_stderr", False):
    _compare = _nbval_plugin.IPyNbCell.compare_outputs

    def compare_outputs(self, test, ref, skip_compare=None):
        return _compare(self, _drop_stderr(test), _drop_stderr(ref), skip_compare)

    _nbval_plugin.IPyNbCell.compare_outputs = compare_outputs
    _nbval_plugin.IPyNbCell._swiftlib_no_stderr = True
