"""Making a hook instance from its configured `"package.module:Name"` and options.

The configuration has already imported the module and found `Name` (bastion.config.hooks);
here it is called with the options and the result checked. Python imports a module once
per process, so a reload (SIGHUP) makes new instances with the new options from the code
already loaded: changed hook code needs a restart.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bastion.config.hooks import resolve_hook
from bastion.hooks.hook import Hook


def make_hook(path: str, options: Mapping[str, Any]) -> Hook:
    """`Name(options)` for `path` = `"package.module:Name"`; ValueError with a message for
    people when it cannot be made (whatever the hook's constructor raised)."""
    factory = resolve_hook(path)
    assert callable(factory)  # resolve_hook checked it
    try:
        made = factory(options)
    except ValueError as error:
        raise ValueError(f'"{path}": {error}') from None
    except Exception as error:
        raise ValueError(f'"{path}" failed to start: {type(error).__name__}: {error}') from None
    if not isinstance(made, Hook):
        raise ValueError(
            f'"{path}" made a {type(made).__name__}, not a bastion.hooks.Hook '
            "(subclass Hook, or return an instance of a subclass)"
        )
    return made


def overrides(hook: Hook, method: str) -> bool:
    """Whether `hook`'s class has its own `method` (the default ones do nothing)."""
    return getattr(type(hook), method) is not getattr(Hook, method)
