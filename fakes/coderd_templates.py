class TemplatesMixin:
    def register_template_routes(self):
        pass
