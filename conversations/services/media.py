"""Media files: inbound downloads checked against Meta's limits and SHA-256,
agents' uploads, and the file kept on its message.
"""

import base64
import hashlib
import mimetypes
import uuid
from dataclasses import dataclass

from django.core.files.base import ContentFile
from django.db import transaction

from .. import realtime
from ..delivery import doorbells
from ..models import (
    Message,
    WhatsAppNumber,
)
from ..whatsapp import client, payloads
from . import errors

# Biggest file Meta delivers per kind; stickers by animation.
MEDIA_MAX_BYTES = {
    "audio": 16 * 1024 * 1024,
    "document": 100 * 1024 * 1024,
    "image": 5 * 1024 * 1024,
    "video": 16 * 1024 * 1024,
    "sticker": 500 * 1024,
}


STATIC_STICKER_MAX_BYTES = 100 * 1024


def _media_limit(message: Message) -> int:
    if message.type == "sticker" and not message.payload.get("animated"):
        return STATIC_STICKER_MAX_BYTES
    return MEDIA_MAX_BYTES.get(message.type, MEDIA_MAX_BYTES["document"])


def _sha256_matches(data: bytes, expected: str) -> bool:
    """Compare Meta's sha256 as hex or as base64 (the encoding is unstated)."""
    digest = hashlib.sha256(data).digest()
    expected = expected.strip()
    return expected.lower() == digest.hex() or expected == base64.b64encode(
        digest
    ).decode("ascii")


def _fetch_media(
    number: WhatsAppNumber, media_id: str, limit: int
) -> tuple[bytes, client.MediaInfo]:
    """Look the media id up and download it; once more with a fresh URL on 404."""
    for attempt in range(2):
        info = client.retrieve_media(number, media_id)
        if info.file_size is not None and info.file_size > limit:
            raise client.MediaTooLarge(
                f"The file is {info.file_size} bytes, over the {limit} allowed"
            )
        try:
            return client.download_media(number, info.url, max_bytes=limit), info
        except client.MediaTooLarge:
            raise
        except client.GraphAPIError as error:
            # Media URLs expire after 5 minutes; a 404 asks for a fresh one.
            if error.http_status == 404 and attempt == 0:
                continue
            raise
    raise AssertionError("unreachable")


def note_media(
    row: Message, media: payloads.Media | None, *, failed: bool = False
) -> bool:
    """Note a received message's media on its row (not saved): waiting for
    its download when Meta gave its id, failed when Meta marked the message
    failed (nothing to fetch). Return whether the row changed."""
    if media is None or not (media.id or failed):
        return False
    row.media_id = media.id
    row.media_mime_type = media.mime_type
    row.media_filename = media.filename
    row.media_state = (
        Message.MediaState.FAILED if failed else Message.MediaState.PENDING
    )
    return True


def queue_download(row: Message) -> None:
    """Download a saved row's media once the transaction commits, if it waits."""
    if row.media_state == Message.MediaState.PENDING:
        doorbells.ring_after_commit(doorbells.DOWNLOAD_MEDIA, row.pk)


def download_media(*, message_id: int) -> Message | None:
    """Download an inbound message's media from Meta and store it.

    Checks the size allowed for its kind and the SHA-256 the webhook gave;
    a refusal marks the message's media failed with the reason. Raise
    MediaTemporarilyUnavailable when trying again later may help.
    """
    message = (
        Message.objects.select_related("conversation__number")
        .filter(pk=message_id)
        .first()
    )
    if message is None or message.media_state != Message.MediaState.PENDING:
        return message
    number = message.conversation.number
    try:
        data, info = _fetch_media(number, message.media_id, _media_limit(message))
    except client.MediaTooLarge as error:
        return fail_media(message_id=message_id, reason=f"Too large: {error}")
    except client.AcceptedButUnknown as error:
        raise errors.MediaTemporarilyUnavailable(error.message) from error
    except (client.UntrustedURL, client.InvalidId) as error:
        # Refused here, before the token went anywhere.
        return fail_media(message_id=message_id, reason=f"Not downloaded: {error}")
    except client.GraphAPIError as error:
        if error.retryable or error.is_transient:
            raise errors.MediaTemporarilyUnavailable(str(error)) from error
        return fail_media(
            message_id=message_id, reason=f"Meta refused the download: {error}"
        )
    expected = str(message.payload.get("sha256") or "") or info.sha256
    if expected and not _sha256_matches(data, expected):
        return fail_media(
            message_id=message_id,
            reason="The downloaded file does not match the SHA-256 Meta sent",
        )
    mime_type = message.media_mime_type or info.mime_type
    with transaction.atomic():
        locked = (
            Message.objects.select_for_update()
            .select_related("conversation")
            .get(pk=message_id)
        )
        if locked.media_state != Message.MediaState.PENDING:
            return locked  # another worker stored it meanwhile
        keep_media(locked, data, mime_type)
        locked.save(
            update_fields=[
                "media_file",
                "media_size",
                "media_sha256",
                "media_mime_type",
                "media_state",
                "updated_at",
            ]
        )
        realtime.publish(
            realtime.MESSAGE_UPDATED,
            conversation=locked.conversation,
            message=locked,
            data={"media": "stored"},
        )
    return locked


def keep_media(message: Message, data: bytes, mime_type: str) -> None:
    """Store a message's media file and what is known of it (not saved yet)."""
    extension = mimetypes.guess_extension(mime_type.split(";")[0].strip()) or ""
    # A random name: the sender's file name lives only in the database.
    message.media_file.save(
        f"{uuid.uuid4().hex}{extension}", ContentFile(data), save=False
    )
    message.media_size = len(data)
    message.media_sha256 = hashlib.sha256(data).hexdigest()
    message.media_mime_type = mime_type
    message.media_state = Message.MediaState.STORED


def fail_media(*, message_id: int, reason: str) -> Message | None:
    """Mark a message's media as not downloadable, saying why."""
    with transaction.atomic():
        message = (
            Message.objects.select_for_update()
            .select_related("conversation")
            .filter(pk=message_id)
            .first()
        )
        if message is None or message.media_state != Message.MediaState.PENDING:
            return message
        message.media_state = Message.MediaState.FAILED
        message.error = {
            **(message.error or {}),
            "media": reason[:1000],
        }
        message.save(update_fields=["media_state", "error", "updated_at"])
        realtime.publish(
            realtime.MESSAGE_UPDATED,
            conversation=message.conversation,
            message=message,
            data={"media": "failed"},
        )
    return message


@dataclass(frozen=True)
class Attachment:
    """A file an agent sends, kept on its message as a customer's media is."""

    data: bytes
    filename: str
    mime_type: str


# What a stored media file is on a message (a resend shows the same file).
MEDIA_FIELDS = (
    "media_id",
    "media_mime_type",
    "media_filename",
    "media_size",
    "media_sha256",
    "media_file",
    "media_state",
)


def upload_media(
    *, number: WhatsAppNumber, kind: str, data: bytes, mime_type: str, filename: str
) -> str:
    """Upload a file to Meta for this number after Meta's checks; its media id."""
    try:
        client.check_media(kind, mime_type, len(data))
    except ValueError as error:
        raise errors.MediaRefused(str(error)) from None
    return client.upload_media(number, data, mime_type, filename, kind=kind)
