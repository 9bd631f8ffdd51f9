from rest_framework import exceptions, status


class BuildAlreadyFinished(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "This build has already finished."
    default_code = "build_finished"
