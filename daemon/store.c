/* The store: thinproxyd's metadata in SQLite. One connection, used under the daemon
 * lock; every change the daemon makes is a transaction (store_begin/store_commit). */
#include <errno.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "store.h"
#include "tp-cleanup.h"

/* Every statement the store runs is a string literal: its prepared form is kept for the
 * life of the connection, found again by the literal's address. A statement still in use
 * further up the stack (stepped, not yet reset) is never handed out twice: the same SQL
 * then gets a second prepared statement. Callers step a statement right after preparing
 * it, before any other store call. */
struct cached_stmt {
	const char *sql;
	sqlite3_stmt *stmt;
};

struct store {
	sqlite3 *db;
	struct cached_stmt *cache;
	size_t n_cache;
};

static const char schema[] =
    "PRAGMA foreign_keys = ON;"
    "CREATE TABLE IF NOT EXISTS meta ("
    "  key TEXT PRIMARY KEY, value INTEGER NOT NULL);"
    "INSERT OR IGNORE INTO meta VALUES ('schema', 1), ('pool_tid', 0);"
    "CREATE TABLE IF NOT EXISTS tenants ("
    "  id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE,"
    "  uid INTEGER NOT NULL, gid INTEGER NOT NULL, nbd_uid INTEGER NOT NULL UNIQUE,"
    "  max_volumes INTEGER NOT NULL, max_size INTEGER NOT NULL,"
    "  max_used INTEGER NOT NULL, created INTEGER NOT NULL);"
    /* The next nbd uid to hand out: it only grows, so that no tenant ever gets the uid
     * of one removed before (the broker knows a tenant by its nbdkit's uid). A store
     * from before the counter starts it above the highest uid in use. */
    "INSERT OR IGNORE INTO meta SELECT 'next_nbd_uid', ifnull(max(nbd_uid) + 1, 0)"
    "  FROM tenants;"
    "CREATE TABLE IF NOT EXISTS volumes ("
    "  id INTEGER PRIMARY KEY,"
    "  tenant_id INTEGER REFERENCES tenants(id),"
    "  name TEXT NOT NULL, thin_id INTEGER NOT NULL UNIQUE, size INTEGER NOT NULL,"
    "  parent_id INTEGER REFERENCES volumes(id), state INTEGER NOT NULL,"
    "  used INTEGER NOT NULL DEFAULT 0, created INTEGER NOT NULL,"
    "  pending_tid INTEGER, updated INTEGER NOT NULL DEFAULT 0);"
    "CREATE UNIQUE INDEX IF NOT EXISTS volumes_by_name ON volumes(ifnull(tenant_id, 0), name);"
    "CREATE INDEX IF NOT EXISTS volumes_by_parent ON volumes(parent_id);"
    /* For the foreign key: without it, removing a tenant scans every volume. */
    "CREATE INDEX IF NOT EXISTS volumes_by_tenant ON volumes(tenant_id);"
    "CREATE TABLE IF NOT EXISTS publications ("
    "  image_id INTEGER NOT NULL REFERENCES volumes(id) ON DELETE CASCADE,"
    "  tenant_id INTEGER NOT NULL," /* 0 = every tenant */
    "  PRIMARY KEY (image_id, tenant_id));"
    /* The one pool change in flight (store.h, struct pool_change). */
    "CREATE TABLE IF NOT EXISTS pool_change ("
    "  id INTEGER PRIMARY KEY CHECK (id = 1), op INTEGER NOT NULL,"
    "  volume_id INTEGER NOT NULL, thin_id INTEGER NOT NULL, origin_thin_id INTEGER NOT NULL,"
    "  prior_state INTEGER NOT NULL, failed INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS foreign_thin_ids (thin_id INTEGER PRIMARY KEY);"
    /* Thin ids come from a counter (store_thin_id_next). A store from before it, one with
     * volumes or a pool transaction id, gets a legacy mark at its highest id + 1: its
     * thinproxy allocated ids as max + 1 and could leave devices behind at them. */
    "INSERT OR IGNORE INTO meta SELECT 'legacy_thin_ids',"
    "  CASE WHEN EXISTS (SELECT 1 FROM volumes)"
    "    OR (SELECT value FROM meta WHERE key = 'pool_tid') > 0"
    "  THEN ifnull((SELECT max(thin_id) FROM volumes), 0) + 1 ELSE 0 END"
    "  WHERE NOT EXISTS (SELECT 1 FROM meta WHERE key = 'next_thin_id');"
    "INSERT OR IGNORE INTO meta SELECT 'next_thin_id', ifnull(max(thin_id), 0) + 1 FROM volumes;"
    "INSERT OR IGNORE INTO meta VALUES ('legacy_checked', 0);"
    /* A volume's labels go with it: the row's removal takes them. */
    "CREATE TABLE IF NOT EXISTS labels ("
    "  volume_id INTEGER NOT NULL REFERENCES volumes(id) ON DELETE CASCADE,"
    "  key TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (volume_id, key)) WITHOUT ROWID;"
    "CREATE INDEX IF NOT EXISTS labels_by_key ON labels(key, value);"
    "CREATE TABLE IF NOT EXISTS grants ("
    "  volume_id INTEGER NOT NULL REFERENCES volumes(id) ON DELETE CASCADE,"
    "  tenant_id INTEGER NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,"
    "  write INTEGER NOT NULL, PRIMARY KEY (volume_id, tenant_id));"
    /* Each tenant's totals, kept by triggers in the transaction that changes a volume,
     * so that the quota check on every create reads one row instead of summing all the
     * tenant's volumes. Rebuilt from the volumes on every open. */
    "CREATE TABLE IF NOT EXISTS tenant_usage ("
    "  tenant_id INTEGER PRIMARY KEY REFERENCES tenants(id) ON DELETE CASCADE,"
    "  volumes INTEGER NOT NULL, size INTEGER NOT NULL, used INTEGER NOT NULL);"
    "CREATE TRIGGER IF NOT EXISTS usage_add AFTER INSERT ON volumes"
    "  WHEN NEW.tenant_id IS NOT NULL BEGIN"
    "  INSERT OR IGNORE INTO tenant_usage VALUES (NEW.tenant_id, 0, 0, 0);"
    "  UPDATE tenant_usage SET volumes = volumes + 1, size = size + NEW.size,"
    "    used = used + NEW.used WHERE tenant_id = NEW.tenant_id;"
    "  END;"
    "CREATE TRIGGER IF NOT EXISTS usage_remove AFTER DELETE ON volumes"
    "  WHEN OLD.tenant_id IS NOT NULL BEGIN"
    "  UPDATE tenant_usage SET volumes = volumes - 1, size = size - OLD.size,"
    "    used = used - OLD.used WHERE tenant_id = OLD.tenant_id;"
    "  END;"
    "CREATE TRIGGER IF NOT EXISTS usage_change AFTER UPDATE OF tenant_id, size, used ON volumes"
    "  WHEN OLD.tenant_id IS NOT NEW.tenant_id OR OLD.size != NEW.size OR OLD.used != NEW.used"
    "  BEGIN"
    "  UPDATE tenant_usage SET volumes = volumes - 1, size = size - OLD.size,"
    "    used = used - OLD.used WHERE tenant_id = OLD.tenant_id;"
    "  INSERT OR IGNORE INTO tenant_usage SELECT NEW.tenant_id, 0, 0, 0"
    "    WHERE NEW.tenant_id IS NOT NULL;"
    "  UPDATE tenant_usage SET volumes = volumes + 1, size = size + NEW.size,"
    "    used = used + NEW.used WHERE tenant_id = NEW.tenant_id;"
    "  END;"
    "BEGIN IMMEDIATE;"
    "DELETE FROM tenant_usage;"
    "INSERT INTO tenant_usage SELECT tenant_id, count(*), sum(size), sum(used) FROM volumes"
    "  WHERE tenant_id IS NOT NULL GROUP BY tenant_id;"
    "COMMIT;";

static int store_error(struct store *store, const char *what)
{
	int code = sqlite3_extended_errcode(store->db);

	if (code == SQLITE_CONSTRAINT_UNIQUE || code == SQLITE_CONSTRAINT_PRIMARYKEY)
		return -EEXIST;
	log_error("store: %s: %s", what, sqlite3_errmsg(store->db));
	return -EIO;
}

/* Hand a statement back to the cache: reset, with no values bound. */
static void cleanup_stmt(sqlite3_stmt **stmt)
{
	if (*stmt == NULL)
		return;
	sqlite3_reset(*stmt);
	sqlite3_clear_bindings(*stmt);
}
#define CLEANUP_STMT __attribute__((cleanup(cleanup_stmt)))

/* Prepare SQL and bind the int64 arguments that follow (N of them). */
static int prepare(struct store *store, sqlite3_stmt **ret_stmt, const char *sql, int n, ...)
{
	sqlite3_stmt *stmt = NULL;
	struct cached_stmt *grown;
	va_list ap;

	for (size_t i = 0; i < store->n_cache && stmt == NULL; i++)
		if (store->cache[i].sql == sql && !sqlite3_stmt_busy(store->cache[i].stmt))
			stmt = store->cache[i].stmt;
	if (stmt == NULL) {
		grown = reallocarray(store->cache, store->n_cache + 1, sizeof *grown);
		if (grown == NULL)
			return -ENOMEM;
		store->cache = grown;
		if (sqlite3_prepare_v3(store->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &stmt,
		                       NULL) != SQLITE_OK)
			return store_error(store, sql);
		store->cache[store->n_cache++] = (struct cached_stmt){sql, stmt};
	}
	va_start(ap, n);
	for (int i = 1; i <= n; i++)
		sqlite3_bind_int64(stmt, i, va_arg(ap, int64_t));
	va_end(ap);
	*ret_stmt = stmt;
	return 0;
}

/* Make the write-ahead log durable: what synchronous=FULL does at every commit, done
 * here only for the commits that need it (see store_open). */
static int sync_log(struct store *store)
{
	sqlite3_file *log = NULL;

	if (sqlite3_file_control(store->db, "main", SQLITE_FCNTL_JOURNAL_POINTER, &log) !=
	    SQLITE_OK)
		return store_error(store, "find the write-ahead log");
	if (log == NULL || log->pMethods == NULL)
		return 0; /* not opened yet: nothing written */
	if (log->pMethods->xSync(log, SQLITE_SYNC_NORMAL) != SQLITE_OK) {
		log_error("store: cannot sync the write-ahead log");
		return -EIO;
	}
	return 0;
}

/* Run a statement that returns no rows. A write outside a transaction is its own
 * transaction, and is synced like store_commit's. */
static int exec_stmt(struct store *store, sqlite3_stmt *stmt, const char *what)
{
	if (sqlite3_step(stmt) != SQLITE_DONE)
		return store_error(store, what);
	if (!sqlite3_stmt_readonly(stmt) && sqlite3_get_autocommit(store->db))
		return sync_log(store);
	return 0;
}

static int query_int(struct store *store, sqlite3_stmt *stmt, int64_t *ret);

/* What a store made by an older thinproxy lacks and the schema's CREATE ... IF NOT EXISTS
 * cannot add: columns (SQLite has no ADD COLUMN IF NOT EXISTS). A volume's "updated"
 * starts as its creation time, also for one an older thinproxy added since (run on this
 * store after this one, it leaves the column at its default). */
static int upgrade(struct store *store)
{
	CLEANUP_STMT sqlite3_stmt *stmt = NULL;
	char *err = NULL;
	int64_t n;
	int r;

	r = prepare(store, &stmt,
	            "SELECT count(*) FROM pragma_table_info('volumes') WHERE name = 'updated'", 0);
	if (r < 0 || (r = query_int(store, stmt, &n)) < 0)
		return r;
	cleanup_stmt(&stmt); /* done reading before the schema changes */
	if (sqlite3_exec(store->db,
	                 n > 0
	                     ? "UPDATE volumes SET updated = created WHERE updated = 0;"
	                     : "BEGIN IMMEDIATE;"
	                       "ALTER TABLE volumes ADD COLUMN updated INTEGER NOT NULL DEFAULT 0;"
	                       "UPDATE volumes SET updated = created;"
	                       "COMMIT;",
	                 NULL, NULL, &err) != SQLITE_OK) {
		log_error("store: cannot add the volumes' update times: %s",
		          err ? err : "unknown error");
		sqlite3_free(err);
		store_rollback(store);
		return -EIO;
	}
	if (n == 0)
		log_info("store: upgraded: volumes have update times and labels");
	return 0;
}

uint64_t store_changes(struct store *store)
{
	return (uint64_t)sqlite3_total_changes64(store->db);
}

int store_open(const char *path, struct store **ret_store)
{
	struct store *store;
	char *err = NULL;

	store = calloc(1, sizeof *store);
	if (store == NULL)
		return -ENOMEM;
	if (sqlite3_open_v2(path, &store->db,
	                    SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
	                    NULL) != SQLITE_OK) {
		log_error("store: cannot open %s: %s", path,
		          store->db ? sqlite3_errmsg(store->db) : "out of memory");
		store_close(store);
		return -EIO;
	}
	sqlite3_busy_timeout(store->db, 5000);
	/* A committed change survives a crash of the daemon and of the machine, which the
	 * reconciliation against the pool relies on: the write-ahead log is synced at every
	 * commit (sync_log, as synchronous=FULL would), except where the caller says a
	 * commit may wait for the next one (store_commit_unsynced). The daemon is the
	 * store's only user: locked exclusively from the first access to the close, the store
	 * takes no file lock per transaction and keeps the WAL index in memory. */
	if (sqlite3_exec(store->db,
	                 "PRAGMA locking_mode = EXCLUSIVE; PRAGMA journal_mode = WAL;"
	                 " PRAGMA synchronous = NORMAL;",
	                 NULL, NULL, &err) != SQLITE_OK ||
	    sqlite3_exec(store->db, schema, NULL, NULL, &err) != SQLITE_OK) {
		log_error("store: cannot initialise %s: %s", path, err ? err : "unknown error");
		sqlite3_free(err);
		store_close(store);
		return -EIO;
	}
	if (upgrade(store) < 0) {
		store_close(store);
		return -EIO;
	}
	*ret_store = store;
	return 0;
}

void store_close(struct store *store)
{
	if (store == NULL)
		return;
	for (size_t i = 0; i < store->n_cache; i++)
		sqlite3_finalize(store->cache[i].stmt);
	free(store->cache);
	sqlite3_close(store->db);
	free(store);
}

static int exec_sql(struct store *store, const char *sql)
{
	CLEANUP_STMT sqlite3_stmt *stmt = NULL;
	int r = prepare(store, &stmt, sql, 0);

	return r < 0 ? r : exec_stmt(store, stmt, sql);
}

int store_begin(struct store *store)
{
	return exec_sql(store, "BEGIN IMMEDIATE");
}

int store_commit(struct store *store)
{
	int r = exec_sql(store, "COMMIT");

	return r < 0 ? r : sync_log(store);
}

int store_commit_unsynced(struct store *store)
{
	return exec_sql(store, "COMMIT");
}

void store_rollback(struct store *store)
{
	if (!sqlite3_get_autocommit(store->db))
		exec_sql(store, "ROLLBACK");
}

/* Read one int64 from a query returning one row. */
static int query_int(struct store *store, sqlite3_stmt *stmt, int64_t *ret)
{
	int rc = sqlite3_step(stmt);

	if (rc == SQLITE_ROW) {
		*ret = sqlite3_column_int64(stmt, 0);
		return 0;
	}
	if (rc == SQLITE_DONE)
		return -ENOENT;
	return store_error(store, sqlite3_sql(stmt));
}

/* The integer meta value KEY; -ENOENT if it is not there. */
static int meta_get(struct store *store, const char *key, int64_t *ret_value)
{
	CLEANUP_STMT sqlite3_stmt *stmt = NULL;
	int r = prepare(store, &stmt, "SELECT value FROM meta WHERE key = ?1", 0);

	if (r < 0)
		return r;
	sqlite3_bind_text(stmt, 1, key, -1, SQLITE_STATIC);
	return query_int(store, stmt, ret_value);
}

static int meta_set(struct store *store, const char *key, int64_t value)
{
	CLEANUP_STMT sqlite3_stmt *stmt = NULL;
	int r = prepare(store, &stmt, "INSERT OR REPLACE INTO meta VALUES (?2, ?1)", 1, value);

	if (r < 0)
		return r;
	sqlite3_bind_text(stmt, 2, key, -1, SQLITE_STATIC);
	return exec_stmt(store, stmt, key);
}

int store_get_pool_tid(struct store *store, uint64_t *ret_tid)
{
	int64_t v;
	int r = meta_get(store, "pool_tid", &v);

	if (r == -ENOENT) {
		log_error("store: no pool transaction id");
		return -EIO;
	}
	if (r < 0)
		return r;
	*ret_tid = (uint64_t)v;
	return 0;
}

int store_set_pool_tid(struct store *store, uint64_t tid)
{
	return meta_set(store, "pool_tid", (int64_t)tid);
}

int store_get_pairing(struct store *store, uint64_t *ret_tid)
{
	int64_t v;
	int r = meta_get(store, "pairing", &v);

	if (r == 0 && v == 0)
		r = -ENOENT;
	if (r < 0)
		return r;
	*ret_tid = (uint64_t)v;
	return 0;
}

int store_set_pairing(struct store *store, uint64_t tid)
{
	return meta_set(store, "pairing", (int64_t)tid);
}

/* The change in flight */

int store_change_get(struct store *store, struct pool_change *ret_change)
{
	CLEANUP_STMT sqlite3_stmt *stmt = NULL;
	int rc, r = prepare(store, &stmt,
	                    "SELECT op, volume_id, thin_id, origin_thin_id, prior_state, failed"
	                    " FROM pool_change WHERE id = 1",
	                    0);

	if (r < 0)
		return r;
	rc = sqlite3_step(stmt);
	if (rc == SQLITE_DONE)
		return -ENOENT;
	if (rc != SQLITE_ROW)
		return store_error(store, "read the pool change");
	memset(ret_change, 0, sizeof *ret_change);
	ret_change->op = (enum change_op)sqlite3_column_int(stmt, 0);
	ret_change->volume_id = sqlite3_column_int64(stmt, 1);
	ret_change->thin_id = (uint32_t)sqlite3_column_int64(stmt, 2);
	ret_change->origin_thin_id = (uint32_t)sqlite3_column_int64(stmt, 3);
	ret_change->prior_state = (enum volume_state)sqlite3_column_int(stmt, 4);
	ret_change->failed = sqlite3_column_int(stmt, 5) != 0;
	return 0;
}

int store_change_set(struct store *store, const struct pool_change *c)
{
	CLEANUP_STMT sqlite3_stmt *stmt = NULL;
	int r = prepare(store, &stmt,
	                "INSERT OR REPLACE INTO pool_change VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6)", 6,
	                (int64_t)c->op, c->volume_id, (int64_t)c->thin_id,
	                (int64_t)c->origin_thin_id, (int64_t)c->prior_state, (int64_t)c->failed);

	return r < 0 ? r : exec_stmt(store, stmt, "record the pool change");
}

int store_change_clear(struct store *store)
{
	CLEANUP_STMT sqlite3_stmt *stmt = NULL;
	int r = prepare(store, &stmt, "DELETE FROM pool_change", 0);

	return r < 0 ? r : exec_stmt(store, stmt, "clear the pool change");
}

/* Tenants */

#define TENANT_COLUMNS "id, name, uid, gid, nbd_uid, max_volumes, max_size, max_used, created"

static void read_tenant(sqlite3_stmt *stmt, struct tenant *t)
{
	memset(t, 0, sizeof *t);
	t->id = sqlite3_column_int64(stmt, 0);
	snprintf(t->name, sizeof t->name, "%s", (const char *)sqlite3_column_text(stmt, 1));
	t->uid = (uint32_t)sqlite3_column_int64(stmt, 2);
	t->gid = (uint32_t)sqlite3_column_int64(stmt, 3);
	t->nbd_uid = (uint32_t)sqlite3_column_int64(stmt, 4);
	t->max_volumes = (uint64_t)sqlite3_column_int64(stmt, 5);
	t->max_size = (uint64_t)sqlite3_column_int64(stmt, 6);
	t->max_used = (uint64_t)sqlite3_column_int64(stmt, 7);
	t->created = sqlite3_column_int64(stmt, 8);
}

static int query_tenant(struct store *store, sqlite3_stmt *stmt, struct tenant *ret_tenant)
{
	int rc = sqlite3_step(stmt);

	if (rc == SQLITE_ROW) {
		read_tenant(stmt, ret_tenant);
		return 0;
	}
	return rc == SQLITE_DONE ? -ENOENT : store_error(store, "read tenant");
}

int store_tenant_add(struct store *store, struct tenant *t)
{
	CLEANUP_STMT sqlite3_stmt *stmt = NULL;
	int r;

	if (t->created == 0)
		t->created = time(NULL);
	r = prepare(store, &stmt,
	            "INSERT INTO tenants (name, uid, gid, nbd_uid, max_volumes, max_size,"
	            " max_used, created) VALUES (?8, ?1, ?2, ?3, ?4, ?5, ?6, ?7)",
	            7, (int64_t)t->uid, (int64_t)t->gid, (int64_t)t->nbd_uid,
	            (int64_t)t->max_volumes, (int64_t)t->max_size, (int64_t)t->max_used,
	            t->created);
	if (r < 0)
		return r;
	sqlite3_bind_text(stmt, 8, t->name, -1, SQLITE_STATIC);
	r = exec_stmt(store, stmt, "add tenant");
	if (r < 0)
		return r;
	t->id = sqlite3_last_insert_rowid(store->db);
	return 0;
}

int store_tenant_get(struct store *store, const char *name, struct tenant *ret_tenant)
{
	CLEANUP_STMT sqlite3_stmt *stmt = NULL;
	int r = prepare(store, &stmt, "SELECT " TENANT_COLUMNS " FROM tenants WHERE name = ?1", 0);

	if (r < 0)
		return r;
	sqlite3_bind_text(stmt, 1, name, -1, SQLITE_STATIC);
	return query_tenant(store, stmt, ret_tenant);
}

int store_tenant_get_by_id(struct store *store, int64_t id, struct tenant *ret_tenant)
{
	CLEANUP_STMT sqlite3_stmt *stmt = NULL;
	int r =
	    prepare(store, &stmt, "SELECT " TENANT_COLUMNS " FROM tenants WHERE id = ?1", 1, id);

	return r < 0 ? r : query_tenant(store, stmt, ret_tenant);
}

int store_tenant_get_by_nbd_uid(struct store *store, uint32_t nbd_uid, struct tenant *ret_tenant)
{
	CLEANUP_STMT sqlite3_stmt *stmt = NULL;
	int r = prepare(store, &stmt, "SELECT " TENANT_COLUMNS " FROM tenants WHERE nbd_uid = ?1",
	                1, (int64_t)nbd_uid);

	return r < 0 ? r : query_tenant(store, stmt, ret_tenant);
}

int store_tenant_update(struct store *store, const struct tenant *t)
{
	CLEANUP_STMT sqlite3_stmt *stmt = NULL;
	int r = prepare(store, &stmt,
	                "UPDATE tenants SET uid = ?2, gid = ?3, max_volumes = ?4, max_size = ?5,"
	                " max_used = ?6 WHERE id = ?1",
	                6, t->id, (int64_t)t->uid, (int64_t)t->gid, (int64_t)t->max_volumes,
	                (int64_t)t->max_size, (int64_t)t->max_used);

	if (r < 0)
		return r;
	r = exec_stmt(store, stmt, "update tenant");
	if (r == 0 && sqlite3_changes(store->db) == 0)
		return -ENOENT;
	return r;
}

int store_tenant_remove(struct store *store, int64_t id)
{
	CLEANUP_STMT sqlite3_stmt *pubs = NULL;
	CLEANUP_STMT sqlite3_stmt *stmt = NULL;
	int r;

	r = prepare(store, &pubs, "DELETE FROM publications WHERE tenant_id = ?1", 1, id);
	if (r < 0 || (r = exec_stmt(store, pubs, "remove publications")) < 0)
		return r;
	r = prepare(store, &stmt, "DELETE FROM tenants WHERE id = ?1", 1, id);
	if (r < 0 || (r = exec_stmt(store, stmt, "remove tenant")) < 0)
		return r;
	return sqlite3_changes(store->db) ? 0 : -ENOENT;
}

/* Collect every row of STMT into a malloc'ed array of SIZE-byte elements filled by READ. */
static int collect(struct store *store, sqlite3_stmt *stmt, size_t size,
                   void (*read)(sqlite3_stmt *, void *), void **ret_array, size_t *ret_n)
{
	CLEANUP_FREE char *array = NULL;
	size_t n = 0, cap = 0;
	int rc;

	while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
		if (n == cap) {
			size_t ncap = cap ? cap * 2 : 16;
			char *p = realloc(array, ncap * size);

			if (p == NULL)
				return -ENOMEM;
			array = p;
			cap = ncap;
		}
		read(stmt, array + n * size);
		n++;
	}
	if (rc != SQLITE_DONE)
		return store_error(store, sqlite3_sql(stmt));
	*ret_array = TAKE_PTR(array);
	*ret_n = n;
	return 0;
}

static void read_tenant_any(sqlite3_stmt *stmt, void *t)
{
	read_tenant(stmt, t);
}

int store_tenant_list(struct store *store, struct tenant **ret_tenants, size_t *ret_n)
{
	CLEANUP_STMT sqlite3_stmt *stmt = NULL;
	int r = prepare(store, &stmt, "SELECT " TENANT_COLUMNS " FROM tenants ORDER BY name", 0);

	return r < 0 ? r
	             : collect(store, stmt, sizeof(struct tenant), read_tenant_any,
	                       (void **)ret_tenants, ret_n);
}

int store_tenant_next_nbd_uid(struct store *store, uint32_t base, uint32_t *ret_uid)
{
	CLEANUP_STMT sqlite3_stmt *get = NULL;
	CLEANUP_STMT sqlite3_stmt *set = NULL;
	int64_t v;
	int r;

	r = store_begin(store);
	if (r == 0)
		r = prepare(store, &get,
		            "SELECT max(value, ?1) FROM meta WHERE key = 'next_nbd_uid'", 1,
		            (int64_t)base);
	if (r == 0)
		r = query_int(store, get, &v);
	cleanup_stmt(&get); /* done reading before the commit */
	if (r == 0 && v > UINT32_MAX - 1)
		r = -ENOSPC;
	if (r == 0)
		r = prepare(store, &set, "UPDATE meta SET value = ?1 WHERE key = 'next_nbd_uid'", 1,
		            v + 1);
	if (r == 0)
		r = exec_stmt(store, set, "count nbd uids");
	if (r == 0)
		r = store_commit(store);
	if (r < 0) {
		store_rollback(store);
		return r == -ENOENT ? -EIO : r;
	}
	*ret_uid = (uint32_t)v;
	return 0;
}

int store_tenant_usage(struct store *store, int64_t tenant_id, struct usage *ret_usage)
{
	CLEANUP_STMT sqlite3_stmt *stmt = NULL;
	int r = prepare(store, &stmt,
	                "SELECT ifnull(sum(volumes), 0), ifnull(sum(size), 0), ifnull(sum(used), 0)"
	                " FROM tenant_usage WHERE tenant_id = ?1",
	                1, tenant_id);

	if (r < 0)
		return r;
	if (sqlite3_step(stmt) != SQLITE_ROW)
		return store_error(store, "tenant usage");
	ret_usage->volumes = (uint64_t)sqlite3_column_int64(stmt, 0);
	ret_usage->size = (uint64_t)sqlite3_column_int64(stmt, 1);
	ret_usage->used = (uint64_t)sqlite3_column_int64(stmt, 2);
	return 0;
}

/* Volumes */

#define VOLUME_COLUMNS                                                                      \
	"v.id, ifnull(v.tenant_id, 0), v.name, v.thin_id, v.size, ifnull(v.parent_id, 0), " \
	"v.state, v.used, v.created, v.updated"

static void read_volume(sqlite3_stmt *stmt, void *ptr)
{
	struct volume *v = ptr;

	memset(v, 0, sizeof *v);
	v->id = sqlite3_column_int64(stmt, 0);
	v->tenant_id = sqlite3_column_int64(stmt, 1);
	snprintf(v->name, sizeof v->name, "%s", (const char *)sqlite3_column_text(stmt, 2));
	v->thin_id = (uint32_t)sqlite3_column_int64(stmt, 3);
	v->size = (uint64_t)sqlite3_column_int64(stmt, 4);
	v->parent_id = sqlite3_column_int64(stmt, 5);
	v->state = (enum volume_state)sqlite3_column_int(stmt, 6);
	v->used = (uint64_t)sqlite3_column_int64(stmt, 7);
	v->created = sqlite3_column_int64(stmt, 8);
	v->updated = sqlite3_column_int64(stmt, 9);
}

static int query_volume(struct store *store, sqlite3_stmt *stmt, struct volume *ret_volume)
{
	int rc = sqlite3_step(stmt);

	if (rc == SQLITE_ROW) {
		read_volume(stmt, ret_volume);
		return 0;
	}
	return rc == SQLITE_DONE ? -ENOENT : store_error(store, "read volume");
}

static void bind_nullable(sqlite3_stmt *stmt, int i, int64_t v)
{
	if (v)
		sqlite3_bind_int64(stmt, i, v);
	else
		sqlite3_bind_null(stmt, i);
}

int store_volume_add(struct store *store, struct volume *v)
{
	CLEANUP_STMT sqlite3_stmt *stmt = NULL;
	int r;

	if (v->created == 0)
		v->created = time(NULL);
	if (v->updated == 0)
		v->updated = v->created;
	r = prepare(store, &stmt,
	            "INSERT INTO volumes (tenant_id, name, thin_id, size, parent_id, state, used,"
	            " created, updated) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
	            0);
	if (r < 0)
		return r;
	bind_nullable(stmt, 1, v->tenant_id);
	sqlite3_bind_text(stmt, 2, v->name, -1, SQLITE_STATIC);
	sqlite3_bind_int64(stmt, 3, v->thin_id);
	sqlite3_bind_int64(stmt, 4, (int64_t)v->size);
	bind_nullable(stmt, 5, v->parent_id);
	sqlite3_bind_int(stmt, 6, v->state);
	sqlite3_bind_int64(stmt, 7, (int64_t)v->used);
	sqlite3_bind_int64(stmt, 8, v->created);
	sqlite3_bind_int64(stmt, 9, v->updated);
	r = exec_stmt(store, stmt, "add volume");
	if (r < 0)
		return r;
	v->id = sqlite3_last_insert_rowid(store->db);
	return 0;
}

int store_volume_get(struct store *store, int64_t tenant_id, const char *name,
                     struct volume *ret_volume)
{
	CLEANUP_STMT sqlite3_stmt *stmt = NULL;
	int r = prepare(store, &stmt,
	                "SELECT " VOLUME_COLUMNS " FROM volumes v"
	                " WHERE ifnull(v.tenant_id, 0) = ?1 AND v.name = ?2",
	                1, tenant_id);

	if (r < 0)
		return r;
	sqlite3_bind_text(stmt, 2, name, -1, SQLITE_STATIC);
	return query_volume(store, stmt, ret_volume);
}

int store_volume_get_by_id(struct store *store, int64_t id, struct volume *ret_volume)
{
	CLEANUP_STMT sqlite3_stmt *stmt = NULL;
	int r = prepare(store, &stmt, "SELECT " VOLUME_COLUMNS " FROM volumes v WHERE v.id = ?1", 1,
	                id);

	return r < 0 ? r : query_volume(store, stmt, ret_volume);
}

int store_volume_get_by_thin_id(struct store *store, uint32_t thin_id, struct volume *ret_volume)
{
	CLEANUP_STMT sqlite3_stmt *stmt = NULL;
	int r =
	    prepare(store, &stmt, "SELECT " VOLUME_COLUMNS " FROM volumes v WHERE v.thin_id = ?1",
	            1, (int64_t)thin_id);

	return r < 0 ? r : query_volume(store, stmt, ret_volume);
}

int store_volume_update(struct store *store, const struct volume *v)
{
	CLEANUP_STMT sqlite3_stmt *stmt = NULL;
	/* pending_tid is what thinproxy before the change record kept per volume: cleared
	 * with the first update. */
	int r =
	    prepare(store, &stmt,
	            "UPDATE volumes SET size = ?2, state = ?3, used = ?4, updated = ?5,"
	            " name = ?6, pending_tid = NULL WHERE id = ?1",
	            5, v->id, (int64_t)v->size, (int64_t)v->state, (int64_t)v->used, v->updated);

	if (r < 0)
		return r;
	sqlite3_bind_text(stmt, 6, v->name, -1, SQLITE_STATIC);
	r = exec_stmt(store, stmt, "update volume");
	if (r == 0 && sqlite3_changes(store->db) == 0)
		return -ENOENT;
	return r;
}

int store_volume_remove(struct store *store, int64_t id)
{
	CLEANUP_STMT sqlite3_stmt *stmt = NULL;
	int r = prepare(store, &stmt, "DELETE FROM volumes WHERE id = ?1", 1, id);

	if (r < 0 || (r = exec_stmt(store, stmt, "remove volume")) < 0)
		return r;
	return sqlite3_changes(store->db) ? 0 : -ENOENT;
}

static const char volumes_of_tenant[] = "SELECT " VOLUME_COLUMNS " FROM volumes v"
                                        " WHERE ifnull(v.tenant_id, 0) = ?1 ORDER BY v.name";

int store_volume_list(struct store *store, int64_t tenant_id, struct volume **ret_volumes,
                      size_t *ret_n)
{
	CLEANUP_STMT sqlite3_stmt *stmt = NULL;
	int r = prepare(store, &stmt, volumes_of_tenant, 1, tenant_id);

	return r < 0 ? r
	             : collect(store, stmt, sizeof(struct volume), read_volume,
	                       (void **)ret_volumes, ret_n);
}

int store_volume_each(struct store *store, int64_t tenant_id, store_volume_fn fn, void *opaque)
{
	CLEANUP_STMT sqlite3_stmt *stmt = NULL;
	struct volume v;
	int rc, r = prepare(store, &stmt, volumes_of_tenant, 1, tenant_id);

	if (r < 0)
		return r;
	while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
		read_volume(stmt, &v);
		if ((r = fn(&v, opaque)) < 0)
			return r;
	}
	return rc == SQLITE_DONE ? 0 : store_error(store, "list volumes");
}

static void finalize_stmt(sqlite3_stmt **stmt)
{
	sqlite3_finalize(*stmt);
}

int store_volume_each_labelled(struct store *store, int64_t tenant_id,
                               const struct tp_label *filter, size_t n, store_volume_fn fn,
                               void *opaque)
{
	static const char head[] = "SELECT " VOLUME_COLUMNS " FROM volumes v"
	                           " WHERE ifnull(v.tenant_id, 0) = ?1";
	static const char clause[] =
	    " AND EXISTS (SELECT 1 FROM labels l WHERE l.volume_id = v.id AND l.key = ?%zu"
	    " AND (?%zu IS NULL OR l.value = ?%zu))";
	__attribute__((cleanup(finalize_stmt))) sqlite3_stmt *stmt = NULL;
	CLEANUP_FREE char *sql = NULL;
	size_t len = 0, i;
	struct volume v;
	FILE *f;
	int rc, r;

	if (n == 0)
		return store_volume_each(store, tenant_id, fn, opaque);
	if (n > TP_LABELS_MAX)
		return -E2BIG;
	/* One clause per label; the text holds parameter numbers only, never a label. Not
	 * kept with the other statements: its text differs with the number of labels. */
	f = open_memstream(&sql, &len);
	if (f == NULL)
		return -ENOMEM;
	fputs(head, f);
	for (i = 0; i < n; i++)
		fprintf(f, clause, 2 + 2 * i, 3 + 2 * i, 3 + 2 * i);
	fputs(" ORDER BY v.name", f);
	if (fclose(f) != 0)
		return -ENOMEM;
	if (sqlite3_prepare_v2(store->db, sql, -1, &stmt, NULL) != SQLITE_OK)
		return store_error(store, "prepare a listing by labels");
	sqlite3_bind_int64(stmt, 1, tenant_id);
	for (i = 0; i < n; i++) {
		sqlite3_bind_text(stmt, (int)(2 + 2 * i), filter[i].key, -1, SQLITE_STATIC);
		if (filter[i].value != NULL)
			sqlite3_bind_text(stmt, (int)(3 + 2 * i), filter[i].value, -1,
			                  SQLITE_STATIC);
	}
	while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
		read_volume(stmt, &v);
		if ((r = fn(&v, opaque)) < 0)
			return r;
	}
	return rc == SQLITE_DONE ? 0 : store_error(store, "list volumes by labels");
}

int store_volume_list_state(struct store *store, enum volume_state state,
                            struct volume **ret_volumes, size_t *ret_n)
{
	CLEANUP_STMT sqlite3_stmt *stmt = NULL;
	int r = prepare(store, &stmt,
	                "SELECT " VOLUME_COLUMNS " FROM volumes v WHERE v.state = ?1 ORDER BY v.id",
	                1, (int64_t)state);

	return r < 0 ? r
	             : collect(store, stmt, sizeof(struct volume), read_volume,
	                       (void **)ret_volumes, ret_n);
}

int store_volume_count_children(struct store *store, int64_t id, uint64_t *ret_n)
{
	CLEANUP_STMT sqlite3_stmt *stmt = NULL;
	int64_t v;
	int r = prepare(store, &stmt, "SELECT count(*) FROM volumes WHERE parent_id = ?1", 1, id);

	if (r < 0 || (r = query_int(store, stmt, &v)) < 0)
		return r;
	*ret_n = (uint64_t)v;
	return 0;
}

int store_volume_count_children_of(struct store *store, int64_t id, int64_t tenant_id,
                                   uint64_t *ret_n)
{
	CLEANUP_STMT sqlite3_stmt *stmt = NULL;
	int64_t v;
	int r = prepare(store, &stmt,
	                "SELECT count(*) FROM volumes WHERE parent_id = ?1"
	                " AND (?2 = 0 OR tenant_id = ?2)",
	                2, id, tenant_id);

	if (r < 0 || (r = query_int(store, stmt, &v)) < 0)
		return r;
	*ret_n = (uint64_t)v;
	return 0;
}

int store_volume_children_by_tenant(struct store *store, int64_t id, store_children_fn fn,
                                    void *opaque)
{
	CLEANUP_STMT sqlite3_stmt *stmt = NULL;
	int rc, r = prepare(store, &stmt,
	                    "SELECT t.name, count(*) FROM volumes v JOIN tenants t"
	                    " ON t.id = v.tenant_id WHERE v.parent_id = ?1"
	                    " GROUP BY t.id ORDER BY t.name",
	                    1, id);

	if (r < 0)
		return r;
	while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
		r = fn((const char *)sqlite3_column_text(stmt, 0),
		       (uint64_t)sqlite3_column_int64(stmt, 1), opaque);
		if (r < 0)
			return r;
	}
	return rc == SQLITE_DONE ? 0 : store_error(store, "count snapshots by tenant");
}

int store_volume_detach_children(struct store *store, int64_t id, int64_t tenant_id)
{
	CLEANUP_STMT sqlite3_stmt *stmt = NULL;
	int r = prepare(store, &stmt,
	                "UPDATE volumes SET parent_id = NULL WHERE parent_id = ?1"
	                " AND ifnull(tenant_id, 0) != ?2",
	                2, id, tenant_id);

	return r < 0 ? r : exec_stmt(store, stmt, "detach snapshots");
}

int store_volume_count(struct store *store, uint64_t *ret_n)
{
	CLEANUP_STMT sqlite3_stmt *stmt = NULL;
	int64_t v;
	int r = prepare(store, &stmt, "SELECT count(*) FROM volumes", 0);

	if (r < 0 || (r = query_int(store, stmt, &v)) < 0)
		return r;
	*ret_n = (uint64_t)v;
	return 0;
}

/* The lowest id from FROM to MAX that neither a volume nor a foreign id holds: FROM
 * itself, or one above a taken id. -ENOENT if there is none. */
static int free_thin_id_from(struct store *store, int64_t from, uint32_t max, int64_t *ret_id)
{
	CLEANUP_STMT sqlite3_stmt *stmt = NULL;
	int r = prepare(store, &stmt,
	                "SELECT c FROM (SELECT ?1 AS c"
	                " UNION ALL SELECT thin_id + 1 FROM volumes WHERE thin_id >= ?1"
	                " UNION ALL SELECT thin_id + 1 FROM foreign_thin_ids WHERE thin_id >= ?1)"
	                " WHERE c <= ?2"
	                " AND NOT EXISTS (SELECT 1 FROM volumes WHERE thin_id = c)"
	                " AND NOT EXISTS (SELECT 1 FROM foreign_thin_ids WHERE thin_id = c)"
	                " ORDER BY c LIMIT 1",
	                2, from, (int64_t)max);

	return r < 0 ? r : query_int(store, stmt, ret_id);
}

int store_thin_id_next(struct store *store, uint32_t max, uint32_t *ret_id, bool *ret_unverified)
{
	int64_t next, legacy, id;
	int r;

	if ((r = meta_get(store, "next_thin_id", &next)) < 0 ||
	    (r = meta_get(store, "legacy_thin_ids", &legacy)) < 0)
		return r == -ENOENT ? -EIO : r;
	if (next < 1 || next > (int64_t)max)
		next = 1;
	r = free_thin_id_from(store, next, max, &id);
	if (r == -ENOENT && next > 1)
		r = free_thin_id_from(store, 1, max, &id);
	if (r == -ENOENT)
		return -ENOSPC;
	if (r == 0)
		r = meta_set(store, "next_thin_id", id + 1);
	if (r < 0)
		return r;
	*ret_id = (uint32_t)id;
	*ret_unverified = id < legacy;
	return 0;
}

int store_thin_id_add_foreign(struct store *store, uint32_t id)
{
	CLEANUP_STMT sqlite3_stmt *stmt = NULL;
	int r = prepare(store, &stmt, "INSERT OR IGNORE INTO foreign_thin_ids VALUES (?1)", 1,
	                (int64_t)id);

	return r < 0 ? r : exec_stmt(store, stmt, "record a foreign thin id");
}

int store_thin_id_count_foreign(struct store *store, uint64_t *ret_n)
{
	CLEANUP_STMT sqlite3_stmt *stmt = NULL;
	int64_t v;
	int r = prepare(store, &stmt, "SELECT count(*) FROM foreign_thin_ids", 0);

	if (r < 0 || (r = query_int(store, stmt, &v)) < 0)
		return r;
	*ret_n = (uint64_t)v;
	return 0;
}

int store_thin_id_legacy(struct store *store, uint32_t *ret_mark)
{
	int64_t mark, checked;
	int r;

	if ((r = meta_get(store, "legacy_thin_ids", &mark)) < 0 ||
	    (r = meta_get(store, "legacy_checked", &checked)) < 0)
		return r == -ENOENT ? -EIO : r;
	*ret_mark = checked ? 0 : (uint32_t)mark;
	return 0;
}

int store_thin_id_legacy_done(struct store *store, uint32_t next)
{
	int64_t cur;
	int r = meta_get(store, "next_thin_id", &cur);

	if (r == 0 && (int64_t)next > cur)
		r = meta_set(store, "next_thin_id", next);
	if (r == 0)
		r = meta_set(store, "legacy_checked", 1);
	return r;
}

/* Labels */

int store_labels_get(struct store *store, int64_t volume_id, struct tp_label **ret_labels,
                     size_t *ret_n)
{
	CLEANUP_STMT sqlite3_stmt *stmt = NULL;
	CLEANUP_FREE char *text = NULL;
	struct tp_label *labels;
	size_t n = 0, len = 0, cap = 0, i;
	char *strings, *p;
	int rc, r;

	r = prepare(store, &stmt, "SELECT key, value FROM labels WHERE volume_id = ?1 ORDER BY key",
	            1, volume_id);
	if (r < 0)
		return r;
	/* Every key and value, each with its NUL, one after the other; then one block of
	 * the labels and their strings. */
	while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
		for (int c = 0; c < 2; c++) {
			size_t l = (size_t)sqlite3_column_bytes(stmt, c);
			const unsigned char *t = sqlite3_column_text(stmt, c);

			if (len + l + 1 > cap) {
				size_t ncap = cap ? 2 * cap : 1024;

				while (ncap < len + l + 1)
					ncap *= 2;
				if ((p = realloc(text, ncap)) == NULL)
					return -ENOMEM;
				text = p;
				cap = ncap;
			}
			if (l > 0)
				memcpy(text + len, t, l);
			text[len + l] = '\0';
			len += l + 1;
		}
		n++;
	}
	if (rc != SQLITE_DONE)
		return store_error(store, "read labels");
	labels = malloc(n * sizeof *labels + len + 1);
	if (labels == NULL)
		return -ENOMEM;
	strings = (char *)(labels + n);
	if (len > 0)
		memcpy(strings, text, len);
	for (i = 0, p = strings; i < n; i++) {
		labels[i].key = p;
		p += strlen(p) + 1;
		labels[i].value = p;
		p += strlen(p) + 1;
	}
	*ret_labels = labels;
	*ret_n = n;
	return 0;
}

static int label_put(struct store *store, int64_t volume_id, const struct tp_label *l,
                     bool *ret_changed)
{
	CLEANUP_STMT sqlite3_stmt *stmt = NULL;
	int r;

	/* An equal value is no change: the volume's update time stays. */
	r = prepare(store, &stmt,
	            "INSERT INTO labels VALUES (?1, ?2, ?3) ON CONFLICT (volume_id, key)"
	            " DO UPDATE SET value = excluded.value WHERE value != excluded.value",
	            1, volume_id);
	if (r < 0)
		return r;
	sqlite3_bind_text(stmt, 2, l->key, -1, SQLITE_STATIC);
	sqlite3_bind_text(stmt, 3, l->value, -1, SQLITE_STATIC);
	r = exec_stmt(store, stmt, "set label");
	if (r == 0 && sqlite3_changes(store->db) > 0)
		*ret_changed = true;
	return r;
}

static int label_remove(struct store *store, int64_t volume_id, const char *key, bool *ret_changed)
{
	CLEANUP_STMT sqlite3_stmt *stmt = NULL;
	int r = prepare(store, &stmt, "DELETE FROM labels WHERE volume_id = ?1 AND key = ?2", 1,
	                volume_id);

	if (r < 0)
		return r;
	sqlite3_bind_text(stmt, 2, key, -1, SQLITE_STATIC);
	r = exec_stmt(store, stmt, "remove label");
	if (r == 0 && sqlite3_changes(store->db) > 0)
		*ret_changed = true;
	return r;
}

int store_labels_set(struct store *store, int64_t volume_id, const struct tp_label *labels,
                     size_t n)
{
	CLEANUP_STMT sqlite3_stmt *stmt = NULL;
	bool changed = false;
	int r = prepare(store, &stmt, "DELETE FROM labels WHERE volume_id = ?1", 1, volume_id);

	if (r < 0 || (r = exec_stmt(store, stmt, "clear labels")) < 0)
		return r;
	for (size_t i = 0; i < n && r == 0; i++)
		r = label_put(store, volume_id, &labels[i], &changed);
	return r;
}

int store_labels_patch(struct store *store, int64_t volume_id, const struct tp_label *patch,
                       size_t n, bool *ret_changed)
{
	bool changed = false;
	int r = 0;

	for (size_t i = 0; i < n && r == 0; i++)
		r = patch[i].value ? label_put(store, volume_id, &patch[i], &changed)
		                   : label_remove(store, volume_id, patch[i].key, &changed);
	if (r == 0)
		*ret_changed = changed;
	return r;
}

int store_labels_count(struct store *store, int64_t volume_id, uint64_t *ret_n)
{
	CLEANUP_STMT sqlite3_stmt *stmt = NULL;
	int64_t v;
	int r =
	    prepare(store, &stmt, "SELECT count(*) FROM labels WHERE volume_id = ?1", 1, volume_id);

	if (r < 0 || (r = query_int(store, stmt, &v)) < 0)
		return r;
	*ret_n = (uint64_t)v;
	return 0;
}

/* Images and publications */

int store_publish(struct store *store, int64_t image_id, int64_t tenant_id)
{
	CLEANUP_STMT sqlite3_stmt *stmt = NULL;
	int r = prepare(store, &stmt, "INSERT OR IGNORE INTO publications VALUES (?1, ?2)", 2,
	                image_id, tenant_id);

	return r < 0 ? r : exec_stmt(store, stmt, "publish image");
}

int store_is_published(struct store *store, int64_t image_id, int64_t tenant_id, bool *ret)
{
	CLEANUP_STMT sqlite3_stmt *stmt = NULL;
	int64_t v;
	int r = prepare(store, &stmt,
	                "SELECT count(*) FROM publications WHERE image_id = ?1"
	                " AND tenant_id IN (0, ?2)",
	                2, image_id, tenant_id);

	if (r < 0 || (r = query_int(store, stmt, &v)) < 0)
		return r;
	*ret = v > 0;
	return 0;
}

int store_publications(struct store *store, int64_t image_id, bool *ret_all,
                       char (**ret_names)[TP_NAME_MAX + 1], size_t *ret_n)
{
	CLEANUP_STMT sqlite3_stmt *stmt = NULL;
	CLEANUP_FREE char(*names)[TP_NAME_MAX + 1] = NULL;
	size_t n = 0;
	bool all = false;
	int rc, r;

	r = prepare(store, &stmt,
	            "SELECT p.tenant_id, ifnull(t.name, '') FROM publications p LEFT JOIN"
	            " tenants t ON t.id = p.tenant_id WHERE p.image_id = ?1 ORDER BY t.name",
	            1, image_id);
	if (r < 0)
		return r;
	while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
		if (sqlite3_column_int64(stmt, 0) == 0) {
			all = true;
			continue;
		}
		void *p = realloc(names, (n + 1) * sizeof *names);
		if (p == NULL)
			return -ENOMEM;
		names = p;
		snprintf(names[n++], sizeof *names, "%s",
		         (const char *)sqlite3_column_text(stmt, 1));
	}
	if (rc != SQLITE_DONE)
		return store_error(store, "list publications");
	*ret_all = all;
	*ret_names = TAKE_PTR(names);
	*ret_n = n;
	return 0;
}

int store_images_visible(struct store *store, int64_t tenant_id, struct volume **ret_volumes,
                         size_t *ret_n)
{
	CLEANUP_STMT sqlite3_stmt *stmt = NULL;
	int r = prepare(store, &stmt,
	                "SELECT " VOLUME_COLUMNS " FROM volumes v WHERE v.tenant_id IS NULL"
	                " AND v.state = ?2 AND EXISTS (SELECT 1 FROM publications p"
	                " WHERE p.image_id = v.id AND p.tenant_id IN (0, ?1)) ORDER BY v.name",
	                2, tenant_id, (int64_t)VOLUME_COMMITTED);

	return r < 0 ? r
	             : collect(store, stmt, sizeof(struct volume), read_volume,
	                       (void **)ret_volumes, ret_n);
}

/* Grants */

int store_grant_set(struct store *store, const struct grant *g)
{
	CLEANUP_STMT sqlite3_stmt *stmt = NULL;
	int r = prepare(store, &stmt, "INSERT OR REPLACE INTO grants VALUES (?1, ?2, ?3)", 3,
	                g->volume_id, g->tenant_id, (int64_t)g->write);

	return r < 0 ? r : exec_stmt(store, stmt, "set grant");
}

int store_grant_remove(struct store *store, int64_t volume_id, int64_t tenant_id)
{
	CLEANUP_STMT sqlite3_stmt *stmt = NULL;
	int r = prepare(store, &stmt, "DELETE FROM grants WHERE volume_id = ?1 AND tenant_id = ?2",
	                2, volume_id, tenant_id);

	if (r < 0 || (r = exec_stmt(store, stmt, "remove grant")) < 0)
		return r;
	return sqlite3_changes(store->db) ? 0 : -ENOENT;
}

static void read_grant(sqlite3_stmt *stmt, void *ptr)
{
	struct grant *g = ptr;

	g->volume_id = sqlite3_column_int64(stmt, 0);
	g->tenant_id = sqlite3_column_int64(stmt, 1);
	g->write = sqlite3_column_int(stmt, 2) != 0;
}

int store_grant_get(struct store *store, int64_t volume_id, int64_t tenant_id,
                    struct grant *ret_grant)
{
	CLEANUP_STMT sqlite3_stmt *stmt = NULL;
	int rc, r = prepare(store, &stmt,
	                    "SELECT volume_id, tenant_id, write FROM grants"
	                    " WHERE volume_id = ?1 AND tenant_id = ?2",
	                    2, volume_id, tenant_id);

	if (r < 0)
		return r;
	rc = sqlite3_step(stmt);
	if (rc == SQLITE_ROW) {
		read_grant(stmt, ret_grant);
		return 0;
	}
	return rc == SQLITE_DONE ? -ENOENT : store_error(store, "read grant");
}

int store_grant_list(struct store *store, struct grant **ret_grants, size_t *ret_n)
{
	CLEANUP_STMT sqlite3_stmt *stmt = NULL;
	int r = prepare(
	    store, &stmt,
	    "SELECT volume_id, tenant_id, write FROM grants ORDER BY volume_id, tenant_id", 0);

	return r < 0 ? r
	             : collect(store, stmt, sizeof(struct grant), read_grant, (void **)ret_grants,
	                       ret_n);
}

int store_granted_to(struct store *store, int64_t tenant_id, struct volume **ret_volumes,
                     struct grant **ret_grants, size_t *ret_n)
{
	CLEANUP_STMT sqlite3_stmt *stmt = NULL;
	CLEANUP_FREE struct volume *vols = NULL;
	CLEANUP_FREE struct grant *grants = NULL;
	size_t n = 0, i;
	int r;

	r = prepare(store, &stmt,
	            "SELECT " VOLUME_COLUMNS " FROM volumes v JOIN grants g ON g.volume_id = v.id"
	            " JOIN tenants t ON t.id = v.tenant_id WHERE g.tenant_id = ?1"
	            " AND v.state IN (?2, ?3) ORDER BY t.name, v.name",
	            3, tenant_id, (int64_t)VOLUME_READY, (int64_t)VOLUME_COMMITTED);
	if (r < 0)
		return r;
	r = collect(store, stmt, sizeof(struct volume), read_volume, (void **)&vols, &n);
	if (r < 0)
		return r;
	grants = calloc(n ? n : 1, sizeof *grants);
	if (grants == NULL)
		return -ENOMEM;
	for (i = 0; i < n; i++) {
		r = store_grant_get(store, vols[i].id, tenant_id, &grants[i]);
		if (r < 0)
			return r;
	}
	*ret_volumes = TAKE_PTR(vols);
	*ret_grants = TAKE_PTR(grants);
	*ret_n = n;
	return 0;
}

const char *volume_state_name(enum volume_state s)
{
	switch (s) {
	case VOLUME_CREATING:
		return "creating";
	case VOLUME_READY:
		return "ready";
	case VOLUME_COMMITTED:
		return "committed";
	case VOLUME_DELETING:
		return "deleting";
	case VOLUME_IMPORTING:
		return "importing";
	}
	return "unknown";
}
