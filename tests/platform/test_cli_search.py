import pytest

from slimnas.platform.cli import main


def _one_line_exit_2(argv, capsys, needle):
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err


@pytest.mark.parametrize(
    "text, needle",
    [
        ("supernet: x\nlatency: {table: t.parquet}\ntargets: [1.0]\nbogus: 1\n", "bogus: unknown field"),
        ("supernet: x\nlatency: {table: t.parquet}\ntargets: [fast]\n", "targets.0:"),
        ("supernet: x\ntargets: [1.0]\n", "latency: Field required"),
        ("search:\n  supernet: x\n  latency: {table: t.parquet}\n  targets: [1.0]\n  methods: [greedy]\n",
         "methods.0:"),
        ("- not a mapping\n", "expected a mapping"),
    ],
)
def test_bad_search_configs_are_one_line(tmp_path, capsys, text, needle):
    config = tmp_path / "search.yaml"
    config.write_text(text)
    _one_line_exit_2(["search", "--config", str(config)], capsys, needle)


def test_missing_inputs_and_bad_targets(tmp_path, capsys):
    _one_line_exit_2(["search", "--config", str(tmp_path / "none.yaml")], capsys, "no such file")
    config = tmp_path / "search.yaml"
    config.write_text(f"supernet: {tmp_path / 'none.pt'}\nlatency: {{table: {tmp_path / 't.parquet'}}}\n"
                      "targets: [1.0]\n")
    _one_line_exit_2(["sweep", "--config", str(config), "--targets", "1,x"], capsys, "--targets")
    _one_line_exit_2(["search", "--config", str(config)], capsys, f"supernet: no such file or folder {tmp_path}")
    (tmp_path / "empty").mkdir()
    config.write_text(f"supernet: {tmp_path / 'empty'}\nlatency: {{table: {tmp_path / 't.parquet'}}}\n"
                      "targets: [1.0]\n")
    _one_line_exit_2(["search", "--config", str(config)], capsys, f"latency.table: no such file {tmp_path}")
