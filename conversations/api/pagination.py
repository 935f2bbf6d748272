"""Page-number pagination for lists, cursor pagination for message threads."""

from rest_framework import pagination


class PageNumberPagination(pagination.PageNumberPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200


class MessageCursorPagination(pagination.CursorPagination):
    """A thread oldest first, in Meta's time; stable while messages arrive."""

    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200
    ordering = ("timestamp", "id")
