# A FROM-scratch image around the statically linked binary. No base image is pulled:
# build the binary first with deploy/build-image.sh (it runs the static build and
# `docker build`).
FROM scratch
COPY paxosstore /paxosstore
EXPOSE 7379 17379 27379
ENTRYPOINT ["/paxosstore"]
CMD ["server", "--config", "/etc/paxosstore/node.toml"]
