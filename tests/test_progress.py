"""The one progress reporter (``slimnas.progress``): its wording, its throttle, its ETA; importable from anywhere."""

import subprocess
import sys

from slimnas.progress import Progress, ProgressLine, clock, eta


def test_the_line_names_the_count_the_times_and_the_item():
    line = Progress(12, 144, "MB4D 2.1 w48", 65.0, 3725.0).line()
    assert line == "12/144 measurements ( 8.3%)  elapsed 1:05  ETA 1:02:05  MB4D 2.1 w48"
    assert Progress(0, 3, "start", 0.4, None).line("network passes").startswith("0/3 network passes ( 0.0%)")
    assert (clock(None), clock(float("nan")), clock(59.6), clock(3600)) == ("?", "?", "1:00", "1:00:00")
    assert eta(10.0, 2, 6) == 20.0 and eta(3.0, 0, 6) is None


def test_a_line_every_few_seconds_and_always_the_last():
    lines = []
    printer = ProgressLine("lut build", echo=lines.append, every_s=3600)
    for done in range(1, 6):
        printer.count(done, 5, f"part {done}")
    assert len(lines) == 2 and lines[0].startswith("[lut build] 1/5 measurements (20.0%)")
    assert lines[1].startswith("[lut build] 5/5 measurements (100.0%)") and lines[1].endswith("part 5")
    every = []
    chatty = ProgressLine("validate", echo=every.append, every_s=0, what="network passes")
    for done in range(1, 4):
        chatty(Progress(done, 3, "net", 1.0, 1.0))
    assert [line.split(" (")[0] for line in every] == [f"[validate] {d}/3 network passes" for d in (1, 2, 3)]


def test_it_imports_nothing_heavy():
    code = ("import sys; import slimnas.progress, slimnas._lazy; "
            "assert not {'torch', 'ray', 'mlflow', 'numpy', 'pydantic'} & set(sys.modules), sorted(sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
