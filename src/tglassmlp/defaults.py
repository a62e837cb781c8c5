"""The one owner of the defaults that bare library calls fall back on.

The entry scripts compose their configs with Hydra and pass settings objects down (a ``PairPotential``, a
``DescriptorSettings``, the ``labels`` node, ...). A library function called without them -- the README's
Python API, ``particle_energies(pos, types, box)`` or ``structural_descriptors(x, types, box)`` -- uses the
project's defaults, and those are read here and nowhere else: ``conf/<group>/<name>.yaml``, the same files the
entry scripts' defaults lists name, so a bare call and ``python train.py`` agree.
"""

from __future__ import annotations

from tglassmlp.paths import config_dir


def group_config(group: str, name: str = "default"):
    """The OmegaConf node of ``conf/<group>/<name>.yaml`` (a fresh node: callers may change it).

    Raises:
        FileNotFoundError: no such file (the message lists the group's files).
    """
    from omegaconf import OmegaConf

    path = config_dir() / group / f"{name}.yaml"
    if not path.is_file():
        available = sorted(p.stem for p in (config_dir() / group).glob("*.yaml"))
        raise FileNotFoundError(f"no config '{group}/{name}' ({path}); available: {available}")
    return OmegaConf.load(path)
