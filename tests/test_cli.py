"""CLI start-up stays light: no torch, Lightning or MLflow until a command runs."""

import subprocess
import sys


def test_cli_startup_imports_no_heavy_library() -> None:
    code = "import sys, alzmri.cli.main; heavy = [m for m in ('torch', 'lightning', 'mlflow', 'torchio', 'monai', 'nilearn') if m in sys.modules]; print(heavy)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_config_file_values_are_used_and_options_win(tmp_path, tiny_bids) -> None:
    def split(name: str, *extra: str) -> int:
        config = tmp_path / f"{name}.yaml"
        config.write_text(f"source: {tiny_bids}\nout: {tmp_path / name}\nratios: [0.5, 0.25, 0.25]\n")
        result = subprocess.run([sys.executable, "-m", "alzmri", "split", "--config", str(config), *extra], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        return sum(1 for _ in open(tmp_path / name / "test.tsv")) - 1

    assert split("from-file") >= 4  # 25 % of 18 scans, from the file
    assert split("overridden", "--ratios", "0.8,0.1,0.1") <= 3  # 10 %, the command line wins

    bad = tmp_path / "bad.yaml"
    bad.write_text("- not a mapping\n")
    result = subprocess.run([sys.executable, "-m", "alzmri", "split", "--config", str(bad)], capture_output=True, text=True)
    assert result.returncode != 0 and "must hold a mapping" in result.stderr and "Traceback" not in result.stderr
