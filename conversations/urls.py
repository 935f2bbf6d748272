from django.urls import include, path

from .api import views as api_views
from .web import business_clock, interactive, manage, reports, views

app_name = "conversations"

urlpatterns = [
    path("", views.inbox, name="inbox"),
    # --- Agent workspace ---
    path("inbox/more/", views.inbox_more, name="inbox-more"),
    path("conversations/<int:pk>/", views.conversation_detail, name="detail"),
    path("conversations/<int:pk>/composer/", views.composer, name="composer"),
    path("conversations/<int:pk>/older/", views.older_messages, name="older"),
    path("conversations/<int:pk>/reply/", views.reply, name="reply"),
    path("conversations/<int:pk>/macros/", interactive.run_macro, name="run-macro"),
    path(
        "conversations/<int:pk>/interactive/",
        interactive.send_interactive,
        name="interactive",
    ),
    path("conversations/<int:pk>/template/", views.send_template, name="send-template"),
    path("conversations/<int:pk>/note/", views.add_note, name="note"),
    path("conversations/<int:pk>/assign/", views.assign, name="assign"),
    path("conversations/<int:pk>/status/", views.change_status, name="status"),
    path("conversations/<int:pk>/labels/", views.set_labels, name="labels"),
    path("conversations/<int:pk>/customer/name/", views.rename_customer, name="rename"),
    path(
        "conversations/<int:pk>/customer/consent/",
        views.record_consent,
        name="consent",
    ),
    path(
        "conversations/<int:pk>/canned/<int:canned_pk>/",
        views.canned_text,
        name="canned",
    ),
    path("messages/<int:pk>/react/", views.react, name="react"),
    path("messages/<int:pk>/resend/", views.resend, name="resend"),
    path("me/availability/", views.set_availability, name="availability"),
    path("me/time-zone/", views.set_time_zone, name="time-zone"),
    # Labels and canned replies, kept by admins.
    path("manage/", manage.manage_lists, name="manage"),
    # --- Reports (business) ---
    path("reports/", reports.reports_page, name="reports"),
    path("reports/<slug:name>.csv", reports.report_csv, name="report-csv"),
    path("api/v1/", include("conversations.api.urls")),
    # Development only: the sandbox's business clock (404 unless enabled).
    path(
        "dev/business-clock/",
        business_clock.business_clock_view,
        name="business-clock",
    ),
    # Customer media, only through this authenticated view (session or token).
    path("media/<int:pk>/", api_views.MessageMedia.as_view(), name="message-media"),
]
