from django.apps import AppConfig


class GoproxyConfig(AppConfig):
    name = "goproxy"
    verbose_name = "Go modules"
