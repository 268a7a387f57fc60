class WorkspacesMixin:
    def register_workspace_routes(self):
        pass
