/* The simulator's inner loop in C: `nstep` MuJoCo steps, each followed by contact tracking.

   Compiled on first use against the installed MuJoCo's headers and loaded with ctypes by
   `sim.native` (it links nothing: mj_step is passed in as a function pointer). The semantics are
   those of the Python reference, `sim.engine.ContactTracker`:

   - entities: moving bodies by body, static geometry by geom; an unordered entity pair is one key
     (min * n + max), `pair_key[g1 * ngeom + g2]`;
   - a pair that begins touching opens an event (time after the step, position of its first contact
     in MuJoCo's contact order), unless it separated less than `rebound_gap` seconds before, in which
     case its previous event continues; events open in ascending key order within a step;
   - every step, each contact's normal force (N, its first constraint row: elliptic cones) times the
     step (s) is added to the impulse of its pair's current event.

   The caller owns every buffer. `pf_advance` stops early, returning the steps done plus a flag,
   when a step's contacts might not fit the buffers; the caller grows them, calls `pf_track` for
   that step and continues. */

#include <stdint.h>
#include <stdlib.h>

#include <mujoco/mujoco.h>

typedef void (*pf_step_fn)(const mjModel*, mjData*);

typedef struct {
  pf_step_fn step;           /* mj_step */
  const int64_t* pair_key;   /* (ngeom * ngeom) entity pair key of a geom pair */
  double* separated;         /* (nkeys) s, when the pair last stopped touching; -inf: never */
  int64_t* event_of;         /* (nkeys) index of the pair's latest event; -1: none */
  int64_t* touching;         /* (capacity) the keys touching after the last step, ascending */
  int64_t n_touching;
  int64_t* scratch;          /* (3 * capacity) one step's (key, contact) pairs, sorted, then its keys */
  int64_t capacity;          /* room in touching; a step with more contacts than this needs more */
  double* event_time;        /* (max_events) s */
  int64_t* event_key;        /* (max_events) */
  double* event_pos;         /* (max_events, 3) m, the first contact's position */
  double* event_impulse;     /* (max_events) N*s */
  int64_t n_events;
  int64_t max_events;
  double rebound_gap;        /* s */
} pf_tracker;

#define PF_NEEDS_ROOM ((int64_t)1 << 40) /* added to the returned step count: grow, then pf_track */

static int compare_pairs(const void* a, const void* b) {
  const int64_t* x = (const int64_t*)a;
  const int64_t* y = (const int64_t*)b;
  if (x[0] != y[0]) return x[0] < y[0] ? -1 : 1;
  return (x[1] > y[1]) - (x[1] < y[1]);
}

/* Whether the contacts of the current step fit the buffers (at worst, every contact a new pair). */
int pf_has_room(const mjData* d, const pf_tracker* t) {
  return d->ncon <= t->capacity && t->n_events + d->ncon <= t->max_events;
}

/* Track the contacts of the step just taken; the buffers must have room (pf_has_room). */
void pf_track(const mjModel* m, const mjData* d, pf_tracker* t) {
  const int ncon = d->ncon, ngeom = m->ngeom;
  const double time = d->time, dt = m->opt.timestep;
  int64_t* pairs = t->scratch;                      /* (ncon, 2): key, contact index */
  int64_t* keys = t->scratch + 2 * t->capacity;     /* (<= ncon) the keys touching now, ascending */
  for (int i = 0; i < ncon; i++) {
    const mjContact* c = d->contact + i;
    pairs[2 * i] = t->pair_key[(int64_t)c->geom[0] * ngeom + c->geom[1]];
    pairs[2 * i + 1] = i;
  }
  qsort(pairs, ncon, 2 * sizeof(int64_t), compare_pairs);

  /* merge the sorted old and new key lists: stopped pairs note the time, new ones may open events */
  int64_t old = 0, n_new = 0;
  const int64_t n_old = t->n_touching;
  for (int i = 0; i < ncon; i++) {
    const int64_t key = pairs[2 * i];
    if (i > 0 && key == pairs[2 * (i - 1)]) continue;  /* not the pair's first contact */
    while (old < n_old && t->touching[old] < key) t->separated[t->touching[old++]] = time;
    if (old < n_old && t->touching[old] == key) {
      old++;
    } else if (time - t->separated[key] > t->rebound_gap) {
      const int64_t e = t->n_events++;
      const mjtNum* pos = d->contact[pairs[2 * i + 1]].pos;
      t->event_time[e] = time;
      t->event_key[e] = key;
      t->event_pos[3 * e] = pos[0];
      t->event_pos[3 * e + 1] = pos[1];
      t->event_pos[3 * e + 2] = pos[2];
      t->event_impulse[e] = 0.0;
      t->event_of[key] = e;
    }
    keys[n_new++] = key;
  }
  while (old < n_old) t->separated[t->touching[old++]] = time;
  for (int64_t k = 0; k < n_new; k++) t->touching[k] = keys[k];
  t->n_touching = n_new;

  /* each contact's normal force over this step, onto its pair's current event */
  for (int i = 0; i < ncon; i++) {
    const mjContact* c = d->contact + i;
    if (c->efc_address < 0) continue;  /* excluded: no constraint, no force */
    const int64_t key = t->pair_key[(int64_t)c->geom[0] * ngeom + c->geom[1]];
    t->event_impulse[t->event_of[key]] += d->efc_force[c->efc_address] * dt;
  }
}

/* Take up to `nstep` steps, tracking contacts after each; the steps done (+ PF_NEEDS_ROOM if the
   last one's contacts are not tracked yet for want of room). */
int64_t pf_advance(const mjModel* m, mjData* d, int64_t nstep, pf_tracker* t) {
  for (int64_t s = 0; s < nstep; s++) {
    t->step(m, d);
    if (!pf_has_room(d, t)) return s + 1 + PF_NEEDS_ROOM;
    pf_track(m, d, t);
  }
  return nstep;
}
