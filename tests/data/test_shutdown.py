"""A script that exits with a live iterator over a Python-backed dataset must not hang."""
import subprocess
import sys
import textwrap


def test_exit_with_live_iterators_does_not_hang(tmp_path):
    script = tmp_path / "leave_iterator_alive.py"
    script.write_text(textwrap.dedent("""
        import tfzoo.data
        # Module-level iterators, still alive when the interpreter finalizes.
        it = iter(tfzoo.data.load("shapes:64", "train"))
        next(it)
        it2 = iter(tfzoo.data.load("shapes:64", "val").prefetch(2))
        next(it2)
        print("read")
    """))
    # Without tfzoo.data._shutdown this hangs on every run (the test would time out).
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "read" in result.stdout
