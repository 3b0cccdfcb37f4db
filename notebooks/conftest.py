"""nbval re-executes the committed notebooks: their kernels inherit this process's environment, so pin the
CPU kernels here (kneelib.cpu_pin), as ``kneelib reproduce --profile smoke`` did when it wrote them."""

from kneelib import cpu_pin

cpu_pin.apply()
