import json
import subprocess
import sys

import pytest

from slimnas.platform.cli import main


def test_space_and_arch_commands(capsys, tmp_path):
    assert main(["space", "tiny"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["num_archs"] == 3086208 and info["max_arch"]["widths"] == [32, 64, 96, 128]
    assert main(["arch", "--preset", "l1", "--params", "--space", "l7"]) == 0
    assert json.loads(capsys.readouterr().out)["params_m"] == pytest.approx(12.29, abs=0.01)


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["arch", "--arch", "/does/not/exist.json"], "no such file /does/not/exist.json"),
        (["arch", "--preset", "l9"], "unknown preset 'l9'"),
        (["space", "huge"], "unknown preset 'huge'"),
        (["arch", "--preset", "l1", "--space", "tiny"], "img_size"),
        (["arch", "--arch", "{bad}"], "bad"),
        (["nonsense"], "invalid choice"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv, needle, tmp_path):
    if argv[:2] == ["arch", "--arch"] and argv[2] == "{bad}":
        path = tmp_path / "arch.json"
        path.write_text('{"img_size": 64, "widths": [24, 32, 32, 32], "blocks": [["4d"], ["4d"], ["4d"], ["4d"]]}')
        argv, needle = ["arch", "--arch", str(path)], "widths[0]: must be a positive multiple of 16"
    proc = subprocess.run([sys.executable, "-m", "slimnas.platform.cli", *argv], capture_output=True, text=True)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
