"""Modal objects that need a cloud gust does not have (S3 buckets, static egress IPs, the older
network file systems): they exist under Modal's names so that a program fails at the line that
uses one, with a message that says what to use instead, not with an AttributeError; and
Modal's scheduler hints, accepted and ignored on a self-hosted cluster."""

from typing import Any, Optional, Sequence, Union

from . import exception as exc


def _refuse(what: str, hint: str) -> None:
    raise exc.InvalidError(f"{what} is not available on gust: {hint}")


class CloudBucketMount:
    """Refused: gust mounts no cloud buckets."""

    def __init__(self, bucket_name: str = "", *args: Any, **kwargs: Any) -> None:
        _refuse(f"CloudBucketMount({bucket_name!r})",
                "copy the data into a gust.Volume (`gust volume put`), or read the bucket from the function "
                "with its client library and a Secret holding the credentials")


class NetworkFileSystem:
    """Refused: Modal's older shared file system; gust.Volume replaces it, as in Modal."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        _refuse("NetworkFileSystem", "use gust.Volume (Volume.from_name(name, create_if_missing=True)) instead")

    @staticmethod
    def from_name(name: str = "", *args: Any, **kwargs: Any) -> "NetworkFileSystem":
        _refuse(f"NetworkFileSystem {name!r}", "use gust.Volume.from_name(name, create_if_missing=True) instead")
        raise AssertionError("unreachable")

    ephemeral = persisted = lookup = from_name


class Proxy:
    """Refused: gust gives containers no static egress IP of their own; they leave through the
    worker's address (NAT), which the operator controls."""

    @staticmethod
    def from_name(name: str, *args: Any, **kwargs: Any) -> "Proxy":
        _refuse(f"Proxy.from_name({name!r})", "containers reach the network through their worker's own address; "
                "allow that address on the remote side instead")
        raise AssertionError("unreachable")


class SchedulerPlacement:
    """Modal's placement hint (region, zone, spot, instance type). A self-hosted cluster has one
    place: accepted so programs run, and ignored."""

    def __init__(self, region: Optional[Union[str, Sequence[str]]] = None, zone: Optional[str] = None,
                 spot: Optional[bool] = None, instance_type: Optional[Union[str, Sequence[str]]] = None) -> None:
        self.region, self.zone, self.spot, self.instance_type = region, zone, spot, instance_type

    def __repr__(self) -> str:
        return (f"SchedulerPlacement(region={self.region!r}, zone={self.zone!r}, spot={self.spot!r}, "
                f"instance_type={self.instance_type!r})")


def interact() -> None:
    """Modal's ``modal.interact()`` hands the container's terminal to the user under
    ``modal run -i``. gust has no interactive mode: without a terminal this does nothing, as in
    Modal outside interactive mode."""
    return None
