// linux/virtio_net.h for C++: the UAPI header names a struct field `class`
// (virtio_net_ctrl_hdr), which is a keyword here. Include this instead.
#pragma once

#if defined(__clang__)
#pragma clang diagnostic push
#pragma clang diagnostic ignored "-Wkeyword-macro"
#endif
#define class class_  // NOLINT: renames the field only while the header is read
#include <linux/virtio_net.h>
#undef class
#if defined(__clang__)
#pragma clang diagnostic pop
#endif
