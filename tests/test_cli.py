"""CLI start-up stays light: no torch, Lightning or MLflow until a command runs."""

import subprocess
import sys


def test_cli_startup_imports_no_heavy_library() -> None:
    code = "import sys, alzmri.cli.main; heavy = [m for m in ('torch', 'lightning', 'mlflow', 'torchio', 'monai', 'nilearn') if m in sys.modules]; print(heavy)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_config_file_values_are_used_and_options_win(tmp_path, tiny_bids) -> None:
    config = tmp_path / "split.yaml"
    config.write_text(f"source: {tiny_bids}\nout: {tmp_path / 'from-file'}\nratios: [0.5, 0.25, 0.25]\n")
    cmd = [sys.executable, "-m", "alzmri", "split", "--config", str(config), "--out", str(tmp_path / "from-cli")]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "from-cli" / "train.tsv").is_file() and not (tmp_path / "from-file").exists()
    n_test = sum(1 for _ in open(tmp_path / "from-cli" / "test.tsv")) - 1
    assert n_test >= 4  # 25 % of 18 scans, not the default 10 %

    config.write_text("- not a mapping\n")
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode != 0 and "must hold a mapping" in result.stderr and "Traceback" not in result.stderr
