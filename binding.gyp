{
  "targets": [
    {
      "target_name": "vhost_device_i2c",
      "sources": ["native/vhost_device_i2c.c"],
      "defines": ["_GNU_SOURCE"],
      "cflags_c": ["-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter"]
    }
  ]
}
