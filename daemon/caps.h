/* thinproxyd's capabilities: after start-up it keeps only what its work needs. */
#ifndef TP_CAPS_H
#define TP_CAPS_H

/* Drop every capability not in the daemon's keep list from the bounding, inheritable,
 * permitted and effective sets. Returns 0 or -errno. */
int caps_drop_unneeded(void);

#endif
