"""Fleet files (devices/fleet-*.yaml): named device profiles validated together, and for each the
Ray custom resource (and node) that owns it, for `edgekit validate --fleet FILE [--cluster ...]`.

    schema_version: 1
    name: lab
    devices:
      - profile: local-cpu            # a profile name (devices/NAME.yaml) or a path
        node: head                    # the Ray node it is local to (a label, for messages and
                                      # to tell two local devices apart)
      - profile: jetson-orin-nano.yaml
        name: orin-1                  # optional: the name in this fleet (default: the profile's)
        resource: edgekit-device:orin-1   # optional: the Ray custom resource (this is the default)

A node owns a device by offering its resource: `ray start --resources '{"edgekit-device:orin-1":
1}'`; a task that needs one unit of it runs only there, and never two at once. Two entries for the
same physical device (the same SSH host and port, or two local devices of the same node, or the
same resource) are refused: they would measure each other."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from edgekit.config import load_yaml
from edgekit.devices import (
    DeviceProfile,
    check_device_name,
    find_profile,
    list_profiles,
    load_profile,
)
from edgekit.errors import ConfigError
from edgekit.registry import suggest

RESOURCE_PREFIX = "edgekit-device:"


def device_resource(name: str) -> str:
    """The Ray custom resource that stands for device `name`."""
    return f"{RESOURCE_PREFIX}{name}"


class FleetEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    profile: str = Field(description="device profile name or YAML path (relative to the file)")
    name: str | None = Field(None, description="the device's name in the fleet (default: the "
                             "profile's name)")
    resource: str | None = Field(None, description="the Ray custom resource of the node that "
                                 "owns the device (default: edgekit-device:<name>)")
    node: str | None = Field(None, description="label of the node the device is attached to")

    @field_validator("name")
    @classmethod
    def _check_name(cls, name: str | None) -> str | None:
        """The fleet's name for a device becomes a folder name too (devices.DEVICE_NAME)."""
        return None if name is None else check_device_name(name, "devices[].name")


class FleetFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: int = 1
    name: str
    description: str = ""
    devices: list[FleetEntry] = Field(min_length=1)


@dataclass(frozen=True)
class FleetDevice:
    """One device of a fleet: its profile, the Ray resource that owns it, and its node label."""

    name: str
    profile: DeviceProfile
    resource: str
    node: str | None = None

    @property
    def physical(self) -> str:
        """What identifies the hardware: the SSH host and port, or 'local on NODE'."""
        return physical_id(self.profile, self.node)


def physical_id(profile: DeviceProfile, node: str | None = None) -> str:
    if profile.is_remote:
        host = str(profile.host).rsplit("@", 1)[-1]
        return f"ssh {host}:{profile.port or 22}"
    return f"local on {node or 'this machine'}"


def fleet_device(profile: DeviceProfile, *, name: str | None = None,
                 resource: str | None = None, node: str | None = None) -> FleetDevice:
    name = check_device_name(name) if name else profile.name
    if name != profile.name:
        profile = profile.model_copy(update={"name": name})
    return FleetDevice(name, profile, resource or device_resource(name), node)


def check_unique(devices: list[FleetDevice], where: str, *, physical: bool = True) -> None:
    """Refuse two entries for one device: the same name, resource or (with `physical`, as a
    fleet file) physical device. (`--device local-cpu --device local-openvino` are two profiles
    of this machine: the fleet runs them one after the other instead.)"""
    keys = [("name", lambda d: d.name), ("resource", lambda d: d.resource)]
    if physical:
        keys.append(("physical device", lambda d: d.physical))
    for what, key in keys:
        seen: dict[str, str] = {}
        for d in devices:
            k = key(d)
            if k in seen:
                hint = ("give each local device the `node:` it is attached to" if what ==
                        "physical device" and not d.profile.is_remote else
                        "list each device once; a device runs one job at a time")
                raise ConfigError(f"{where}: devices {seen[k]!r} and {d.name!r} are the same "
                                  f"{what} ({k})", hint=hint)
            seen[k] = d.name


def resolve_profile(ref: str, base: Path | None) -> DeviceProfile:
    """A profile by name or path; a path is taken relative to `base` (the fleet file's folder)."""
    if base is not None and (base / ref).is_file():
        return load_profile(base / ref)
    if Path(ref).is_file():
        return load_profile(ref)
    try:
        find_profile(ref)
    except ConfigError:
        known = [p.stem for p in list_profiles()]
        if base is not None:
            known += [p.stem for p in base.glob("*.yaml") if not p.stem.startswith("fleet-")]
        raise ConfigError(f"no device profile {ref!r}", hint=suggest(Path(ref).stem,
                                                                      set(known))) from None
    return load_profile(ref)


def load_fleet(path: str | Path) -> list[FleetDevice]:
    """The devices of a fleet file, profiles loaded, each device listed once."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no fleet file {path}", hint="fleet files live in devices/, e.g. "
                          "devices/fleet-lab.yaml (see edgekit/_data/devices/fleet-example.yaml)")
    fleet = load_yaml(FleetFile, path)
    devices = []
    for i, entry in enumerate(fleet.devices):
        try:
            profile = resolve_profile(entry.profile, path.parent)
        except ConfigError as exc:
            raise ConfigError(f"{path}: devices[{i}]: {exc.message}", hint=exc.hint) from None
        devices.append(fleet_device(profile, name=entry.name, resource=entry.resource,
                                    node=entry.node))
    check_unique(devices, str(path))
    return devices
