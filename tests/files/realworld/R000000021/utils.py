'''Helpers for main.py: a one-line progress bar for the terminal.'''
import shutil
import sys
import time

_last = time.time()
_begin = _last


def format_time(seconds):
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f'{hours}h{minutes:02d}m{seconds:02d}s' if hours else f'{minutes}m{seconds:02d}s'


def progress_bar(current, total, msg=None):
    global _last, _begin
    if current == 0:
        _begin = time.time()
    width = max(10, shutil.get_terminal_size((80, 20)).columns - 60)
    done = int(width * (current + 1) / total)
    now = time.time()
    _last = now
    line = '[' + '=' * done + '>' + '.' * (width - done) + ']'
    line += ' %d/%d | Tot: %s' % (current + 1, total, format_time(now - _begin))
    if msg:
        line += ' | ' + msg
    sys.stdout.write('\r' + line)
    if current + 1 == total:
        sys.stdout.write('\n')
    sys.stdout.flush()
