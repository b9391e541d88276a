# For users with a container engine: `make build && docker build -t otelcol-tcpconn:0.1.0 .`
# (`make image` builds the same image without one.)
FROM scratch
COPY bin/otelcol-tcpconn /otelcol-tcpconn
COPY config/otelcol-tcpconn.yaml /etc/otelcol-tcpconn/config.yaml
ENTRYPOINT ["/otelcol-tcpconn"]
CMD ["--config=/etc/otelcol-tcpconn/config.yaml"]
