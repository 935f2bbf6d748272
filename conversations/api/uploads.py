"""The API's side of size-limited uploads (conversations/uploads.py): a
multipart parser that refuses a file past the view's limit as it arrives,
and a 413 in the API's error shape."""

from django.conf import settings
from django.template.defaultfilters import filesizeformat
from rest_framework import status
from rest_framework.exceptions import APIException
from rest_framework.parsers import JSONParser, MultiPartParser

from conversations import uploads


class RequestTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "too_large"
    default_detail = "The request is too large."


class SizeLimitedMultiPartParser(MultiPartParser):
    """multipart/form-data whose files are counted as they stream and refused
    past the limit of the view's upload_kind, the rest left unread."""

    def parse(self, stream, media_type=None, parser_context=None):
        request = parser_context["request"]
        kind = parser_context["view"].upload_kind
        handler = uploads.limit_upload(request, kind)
        data_and_files = super().parse(stream, media_type, parser_context)
        if handler.too_large:
            raise RequestTooLarge(uploads.refusal_text(kind))
        return data_and_files


class AcceptsUpload:
    """An API view taking a file of `upload_kind` as multipart, or JSON.

    A body larger than the upload's limit (or than Django's
    DATA_UPLOAD_MAX_MEMORY_SIZE for JSON) is refused 413 by its
    Content-Length before anything is read; a multipart file that grows past
    the limit is refused by the parser as it streams.
    """

    upload_kind: str
    parser_classes = [JSONParser, SizeLimitedMultiPartParser]

    def initial(self, request, *args, **kwargs):
        multipart = request.content_type.startswith("multipart/")
        limit = (
            uploads.body_limit(self.upload_kind)
            if multipart
            else settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        )
        if uploads.body_was_cut(request) or uploads.declared_length(request) > limit:
            raise RequestTooLarge(
                uploads.refusal_text(self.upload_kind)
                if multipart
                else f"Only a multipart body may be over {filesizeformat(limit)}."
            )
        super().initial(request, *args, **kwargs)
