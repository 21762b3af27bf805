"""A tiny Python-backend model for the stack tests: OUTPUT = INPUT + 1."""

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            values = pb_utils.get_input_tensor_by_name(request, "INPUT").as_numpy()
            output = pb_utils.Tensor("OUTPUT", (values + 1).astype(values.dtype))
            responses.append(pb_utils.InferenceResponse(output_tensors=[output]))
        return responses
