"""IPython startup file of the notebook tests: checks every figure a notebook draws.

``tests/test_notebooks.py`` copies this file into the ``profile_default/startup`` folder of a
temporary ``IPYTHONDIR``, so the kernel nbval starts runs it before the first cell. It remembers
each matplotlib figure created while a cell runs and, when the cell ends, checks its image
panels with :func:`course_lib.viz.panel_problems` (blank, all-NaN, transparent or clipped to
white). One JSON line per cell that drew figures goes to ``$COURSE_FIGCHECK_LOG``; the test
fails the notebook on any problem, naming the cell. Nothing here is specific to a notebook, so a
new notebook is covered without editing the test.
"""


def _course_install_figure_check():
    import json
    import os

    from IPython import get_ipython
    from matplotlib.figure import Figure

    shell, log = get_ipython(), os.environ.get("COURSE_FIGCHECK_LOG")
    if shell is None or not log:
        return
    created = []
    original_init = Figure.__init__

    def init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        created.append(self)

    Figure.__init__ = init

    def write(entry):
        with open(log, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")

    def check(result):
        if not created:
            return
        from course_lib.viz import panel_problems

        figures, panels, problems = list(created), 0, []
        created.clear()
        for k, fig in enumerate(figures):
            panels += sum(len(ax.get_images()) for ax in fig.axes)
            problems += [f"figure {k + 1}/{len(figures)}, {p}" for p in panel_problems(fig)]
        lines = [ln for ln in (result.info.raw_cell or "").splitlines()
                 if ln.strip() and not ln.lstrip().startswith("#")]
        write({"cell": result.execution_count, "first_line": lines[0][:100] if lines else "",
               "figures": len(figures), "panels": panels, "problems": problems})

    shell.events.register("post_run_cell", check)
    write({"installed": True})


_course_install_figure_check()
del _course_install_figure_check
