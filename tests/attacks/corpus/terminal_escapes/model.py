"""Fails at import with a message aimed at the TA's terminal: an OSC 52 clipboard write, a
window-title change, Rich markup that would say the checks pass, and an unbalanced tag."""

raise RuntimeError("\x1b]52;c;cHduZWQ=\x07\x1b]0;owned\x07[green]all checks pass[/] [/x] done")
