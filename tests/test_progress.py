import io

from pgpong.engine.progress import Progress


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_terminal_gets_one_live_line_rewritten_in_place():
    out = FakeTerminal()
    p = Progress(10, stream=out)
    p.update(1, -21.0, 2000.0, 1.0)
    p._last = float("-inf")
    p.update(2, -20.5, 2100.0, 2.0)
    p.close()
    text = out.getvalue()
    assert text.count("\r") == 2 and text.count("\n") == 1
    assert "episode 2/10  running reward -20.50  2,100 steps/s  ETA 0m08s" in text


def test_pipe_gets_plain_periodic_lines():
    out = io.StringIO()
    p = Progress(3, every_s=3600, stream=out)
    for ep in (1, 2, 3):
        p.update(ep, -21.0, 1500.0, float(ep))
    lines = out.getvalue().splitlines()
    assert lines == ["episode 1/3  running reward -21.00  1,500 steps/s  ETA 0m02s",
                     "episode 3/3  running reward -21.00  1,500 steps/s  ETA 0m00s"]
    assert "\r" not in out.getvalue()
