"""bastion's configuration: the TOML file's models (model.py), loading with key-path errors
(load.py) and the reference page rendered from the models (docs.py).

Imports pydantic, bastion.units and bastion.errors only; never sockets or asyncio.
"""

from bastion.config.load import load_config, parse_config
from bastion.config.model import BastionConfig

__all__ = ["BastionConfig", "load_config", "parse_config"]
