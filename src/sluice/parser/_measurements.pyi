from typing import Optional

__all__ = ["limits", "transcode"]

def transcode(
    payload: bytes,
) -> Optional[tuple[list[str], list[int], list[bytes], list[float], list[bytes]]]: ...
def limits() -> dict[str, int]: ...
