# The GPU workstation's image: serve the VLA (pld-robot serve-policy), learn the residual
# (pld-robot learn) and distill (pld-robot distill). No ROS: these commands only read and write the
# episode store and talk HTTP/websocket to the robot.
#
#   docker build -f docker/workstation.Dockerfile -t pld-robot-workstation:0.1.0 .   # from the repository root
#   docker compose -f docker/compose.yaml up                                          # server + learner
#
# torch==2.13.0 from PyPI (requirements/base.txt) is the CUDA build: its nvidia-* wheels bring the
# CUDA runtime, the host brings the driver (NVIDIA Container Toolkit). transformers==5.23.0 is pinned
# in the same file: PI0's model code changes between releases. Python 3.11, as the lock files were
# resolved with.
FROM python:3.11-slim-bookworm

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 MUJOCO_GL=egl
RUN apt-get update && apt-get install -y --no-install-recommends \
        libusb-1.0-0 libosmesa6 libegl1 libgomp1 libquadmath0 libudev1 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/pld_robot
COPY requirements/ requirements/
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install -r requirements/build.txt \
    && /opt/venv/bin/pip install -r requirements/base.txt
COPY . .
RUN /opt/venv/bin/pip install --no-deps --no-build-isolation .
ENV PATH=/opt/venv/bin:$PATH
ENTRYPOINT ["pld-robot"]
CMD ["--help"]
