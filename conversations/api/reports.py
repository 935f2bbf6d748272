"""The reports' CSV files for integrations: GET /api/v1/reports/<name>.csv.

The same file as the reports page's links, with the same scoping (only the
conversations of the numbers the token's user may see) and the same period
(`range`, or `from`/`to` in the user's time zone), for a token holding
conversations.view_reports. Errors answer JSON like every other endpoint.
"""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.views import APIView

from conversations.selectors import reports
from conversations.web.reports import QUICK_RANGES, ReportRangeForm, csv_file

from .permissions import HasModelPermission


class CanViewReports(HasModelPermission):
    permission = "conversations.view_reports"
    message = "This user may not see reports (conversations.view_reports)."


class ErrorsAsJSON(BaseContentNegotiation):
    """The file answers text/csv itself; any error answers JSON, whatever
    the client's Accept header asked for (text/csv included)."""

    def select_parser(self, request, parsers):
        return parsers[0]

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


@extend_schema(
    summary="One report table as CSV",
    description=(
        "The reports page's table `name` (one of "
        + ", ".join(f"`{name}`" for name in reports.TABLE_NAMES)
        + ") as a CSV file named `<name>_<from>_<to>.csv`. Counts only the "
        "conversations of the numbers the user may see. Durations are seconds "
        "(columns ending in `_seconds`), money is per currency, days are the "
        "user's time zone. Needs conversations.view_reports."
    ),
    parameters=[
        OpenApiParameter(
            "name", str, OpenApiParameter.PATH, enum=list(reports.TABLE_NAMES)
        ),
        OpenApiParameter(
            "range",
            str,
            enum=list(QUICK_RANGES),
            description="A quick range; wins over from/to.",
        ),
        OpenApiParameter(
            "from",
            OpenApiTypes.DATE,
            description="First day (YYYY-MM-DD); default 29 days before `to`.",
        ),
        OpenApiParameter(
            "to",
            OpenApiTypes.DATE,
            description="Last day, included, at most today; default today. "
            "A period covers at most 366 days; neither: the last 30 days.",
        ),
    ],
    responses={
        (200, "text/csv"): OpenApiResponse(OpenApiTypes.STR, description="The CSV."),
        400: OpenApiResponse(description="A bad period: code and errors per field."),
        403: OpenApiResponse(description="No conversations.view_reports."),
        404: OpenApiResponse(description="No report of that name."),
    },
)
class ReportCSV(APIView):
    permission_classes = [CanViewReports]
    content_negotiation_class = ErrorsAsJSON

    def get(self, request, name: str):
        if name not in reports.TABLE_NAMES:
            raise NotFound("No such report.")
        form = ReportRangeForm(request.query_params, zone=request.user.zone)
        if not form.is_valid():
            raise ValidationError(form.error_lists(), code="invalid")
        return csv_file(request.user, name, form.period)
