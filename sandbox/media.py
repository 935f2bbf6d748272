"""Media the business uploaded or the simulated customers sent."""

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass, field

# A 1x1 PNG: what a customer "sends" when a test asks for an image without bytes.
TINY_PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)
PLACEHOLDER_BYTES = {
    "image": (TINY_PNG, "image/jpeg"),
    "sticker": (
        b"RIFF\x1a\x00\x00\x00WEBPVP8L\r\x00\x00\x00/\x00\x00\x00\x10\x07\x10\x11\x11\x88\x88\xfe\x07\x00",
        "image/webp",
    ),
    "audio": (b"OggS\x00\x02" + bytes(20), "audio/ogg"),
    "voice": (b"OggS\x00\x02" + bytes(20), "audio/ogg; codecs=opus"),
    "video": (bytes(8) + b"ftypmp42" + bytes(16), "video/mp4"),
    "document": (
        b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n",
        "application/pdf",
    ),
}


@dataclass
class Media:
    id: str
    data: bytes
    mime_type: str
    phone_number_id: str
    filename: str = ""
    created_at: float = field(default_factory=time.time)

    @property
    def sha256_hex(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def sha256_base64(self) -> str:
        """The encoding Meta's webhook examples use for `sha256`."""
        return base64.b64encode(hashlib.sha256(self.data).digest()).decode()


class MediaStore:
    def __init__(self):
        self._items: dict[str, Media] = {}
        # Signs download URLs so a URL cannot be forged or have its expiry moved.
        self._url_key = secrets.token_bytes(32)

    def add(
        self, data: bytes, mime_type: str, phone_number_id: str, filename: str = ""
    ) -> Media:
        media_id = str(secrets.randbelow(9 * 10**15) + 10**15)
        media = Media(media_id, data, mime_type, phone_number_id, filename)
        self._items[media_id] = media
        return media

    def get(self, media_id: str) -> Media | None:
        return self._items.get(media_id)

    def delete(self, media_id: str) -> bool:
        return self._items.pop(media_id, None) is not None

    def clear(self):
        self._items.clear()

    def _url_hash(self, media_id: str, expires: int) -> str:
        message = f"{media_id}:{expires}".encode()
        return hmac.new(self._url_key, message, hashlib.sha256).hexdigest()[:32]

    def download_url(self, base_url: str, media_id: str, ttl: float) -> str:
        """A lookaside-style URL like Meta's; it still needs the bearer token."""
        expires = int(time.time() + ttl)
        digest = self._url_hash(media_id, expires)
        return (
            f"{base_url}/whatsapp_business/attachments/"
            f"?mid={media_id}&ext={expires}&hash={digest}"
        )

    def resolve_url(self, media_id: str, expires: str, digest: str) -> Media | None:
        """The media behind a download URL, or None if forged or expired."""
        try:
            expires_at = int(expires)
        except ValueError:
            return None
        if not hmac.compare_digest(self._url_hash(media_id, expires_at), digest):
            return None
        if expires_at < time.time():
            return None
        return self.get(media_id)
